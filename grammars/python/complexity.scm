; radon's rules: if/elif/ternary, loops (+1 for a loop's else), each except (+1 for try's else),
; each extra operand of and/or, comprehension for/if clauses, assert, match cases but the wildcard.
(if_statement) @branch
(elif_clause) @branch
(conditional_expression) @branch
(for_statement) @branch
(while_statement) @branch
(for_statement alternative: (else_clause) @branch)
(while_statement alternative: (else_clause) @branch)
(except_clause) @branch
(try_statement (else_clause) @branch)
(boolean_operator) @branch
(for_in_clause) @branch
(if_clause) @branch
(assert_statement) @branch
(case_clause) @branch
(case_clause (case_pattern) @default (#eq? @default "_"))
