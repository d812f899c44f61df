(if_statement) @branch
(ternary_expression) @branch
(for_statement) @branch
(for_in_statement) @branch
(while_statement) @branch
(do_statement) @branch
(catch_clause) @branch
(switch_case) @branch
(binary_expression operator: "&&") @branch
(binary_expression operator: "||") @branch
(binary_expression operator: "??") @branch
