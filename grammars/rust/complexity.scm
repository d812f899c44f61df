(if_expression) @branch
(while_expression) @branch
(for_expression) @branch
(match_arm) @branch
(match_arm pattern: (match_pattern) @default (#eq? @default "_"))
(binary_expression operator: "&&") @branch
(binary_expression operator: "||") @branch
