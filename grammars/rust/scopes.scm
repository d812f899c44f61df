(function_item name: (identifier) @name) @function
(closure_expression) @function
(impl_item type: (_) @name) @class
(trait_item name: (type_identifier) @name) @class
(mod_item name: (identifier) @name) @class
