(function_declaration name: (identifier) @name) @function
(method_declaration name: (field_identifier) @name) @function
(func_literal) @function
(type_spec name: (type_identifier) @name) @class
