(if_statement) @branch
(for_statement) @branch
(expression_case) @branch
(type_case) @branch
(communication_case) @branch
(binary_expression operator: "&&") @branch
(binary_expression operator: "||") @branch
