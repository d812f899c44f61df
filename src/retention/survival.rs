//! How much of a piece of code is still in a text: the token edit distance between the code and
//! its best-matching stretch of the text (approximate substring matching, Sellers 1980), as a
//! share of the code's tokens. Tokens make it indifferent to reformatting; the best *contiguous*
//! stretch keeps scattered look-alike tokens (every file has `(` and `=`) from counting as kept.
//! Only insertions and deletions count (a changed token is one of each): with substitutions at
//! cost 1, deleted code would "survive" by pairing its tokens with whatever follows it.

/// The share (0..1) of `code`'s tokens found, in order and together, somewhere in `text`.
/// Empty code has nothing left to survive: 0.
pub fn survival(code: &[&str], text: &[&str]) -> f64 {
    if code.is_empty() {
        return 0.0;
    }
    let distance = best_substring_distance(code, text);
    1.0 - distance.min(code.len()) as f64 / code.len() as f64
}

/// The least insert/delete distance between `a` and any contiguous stretch of `b` (free start and
/// end in `b`): one row of the dynamic programme at a time, O(|a|·|b|) time, O(|b|) memory.
fn best_substring_distance(a: &[&str], b: &[&str]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for (i, token) in a.iter().enumerate() {
        current[0] = i + 1;
        for j in 1..=b.len() {
            let keep = if *token == b[j - 1] { previous[j - 1] } else { usize::MAX };
            current[j] = keep.min(previous[j] + 1).min(current[j - 1] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous.into_iter().min().unwrap_or(a.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::tokens;

    fn share(code: &str, text: &str) -> f64 {
        survival(&tokens(code), &tokens(text))
    }

    #[test]
    fn tokens_ignore_layout_and_quote_style() {
        assert_eq!(tokens("x = f('a',\n    b)"), ["x", "=", "f", "(", "\"", "a", "\"", ",", "b", ")"]);
        assert_eq!(
            share("x = f('a', b)", "def g():\n    x = f(\n        \"a\",\n        b,\n    )\n"),
            1.0 - 1.0 / 10.0
        );
    }

    #[test]
    fn kept_partly_deleted_renamed_and_gone() {
        let code = "total = price * quantity + shipping_cost";
        assert_eq!(share(code, &format!("import os\n\n{code}\nprint(total)\n")), 1.0);
        assert_eq!(share(code, "import os\n\ntotal = price * quantity\nprint(total)\n"), 5.0 / 7.0);
        assert_eq!(share(code, "total = cost * quantity + shipping_cost"), 5.0 / 7.0, "one token out, one in");
        // The same common tokens scattered over a file are not the code.
        assert!(share(code, "total = 1\nx = price\ny = quantity\n+ shipping\n") < 0.67);
        assert_eq!(share(code, ""), 0.0);
        assert_eq!(share("", "anything"), 0.0);
    }
}
