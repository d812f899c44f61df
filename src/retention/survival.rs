//! How much of a piece of code is still in a text: the token edit distance between the code and
//! its best-matching stretch of the text (approximate substring matching, Sellers 1980), as a
//! share of the code's tokens. Tokens make it indifferent to reformatting; the best *contiguous*
//! stretch keeps scattered look-alike tokens (every file has `(` and `=`) from counting as kept.
//! Only insertions and deletions count (a changed token is one of each): with substitutions at
//! cost 1, deleted code would "survive" by pairing its tokens with whatever follows it.
//!
//! [`plain_survival`] is that definition as the textbook dynamic programme. The sweep uses
//! [`Vocabulary::survival`], which computes the same distance 64 rows of the programme at a time
//! (bit-parallel, after Myers 1999 and Hyyrö's formulation of it, with the cell rule of this
//! insert/delete distance) over tokens interned to integers: a check of a 5 000-line file costs
//! about as much as reading it. A property test holds the two equal.

use crate::syntax::tokens;

/// The share (0..1) of `code`'s tokens found, in order and together, somewhere in `text`, by the
/// plain O(|code|·|text|) programme. Empty code has nothing left to survive: 0.
pub fn plain_survival(code: &str, text: &str) -> f64 {
    let (code, text) = (tokens(code), tokens(text));
    if code.is_empty() {
        return 0.0;
    }
    let mut previous = vec![0usize; text.len() + 1];
    let mut current = vec![0usize; text.len() + 1];
    for (i, token) in code.iter().enumerate() {
        current[0] = i + 1;
        for j in 1..=text.len() {
            let keep = if *token == text[j - 1] { previous[j - 1] } else { usize::MAX };
            current[j] = keep.min(previous[j] + 1).min(current[j - 1] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let distance = previous.into_iter().min().unwrap_or(code.len());
    share(distance, code.len())
}

fn share(distance: usize, code_tokens: usize) -> f64 {
    1.0 - distance.min(code_tokens) as f64 / code_tokens as f64
}

/// Token ids for the texts of one sweep (equal tokens, equal ids), and the matcher's scratch.
#[derive(Default)]
pub struct Vocabulary {
    ids: foldhash::HashMap<Box<str>, u32>,
    /// Per token id: which of the current code's match masks it selects (`NONE`: not in the code).
    slots: Vec<u32>,
}

/// A text's token ids and where each token starts in it.
#[derive(Default)]
pub struct Located {
    pub ids: Vec<u32>,
    pub starts: Vec<u32>,
}

impl Located {
    /// The ids of the tokens that start within bytes `range`.
    pub fn within(&self, range: std::ops::Range<usize>) -> &[u32] {
        let at = |offset: usize| self.starts.partition_point(|&start| (start as usize) < offset);
        &self.ids[at(range.start)..at(range.end)]
    }
}

const NONE: u32 = u32::MAX;
const WORD: usize = 64;

impl Vocabulary {
    /// The ids of `text`'s tokens (see [`crate::syntax::tokens`]).
    pub fn ids(&mut self, text: &str) -> Vec<u32> {
        tokens(text).into_iter().map(|token| self.id(token)).collect()
    }

    /// The ids of `text`'s tokens and the byte offset each starts at.
    pub fn ids_at(&mut self, text: &str) -> Located {
        let mut located = Located::default();
        crate::syntax::token_spans(text, |offset, token| {
            located.ids.push(self.id(token));
            located.starts.push(offset as u32);
        });
        located
    }

    /// The id of one token.
    pub fn id(&mut self, token: &str) -> u32 {
        if let Some(&id) = self.ids.get(token) {
            return id;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(token.into(), id);
        self.slots.push(NONE);
        id
    }

    /// [`plain_survival`] of token ids from this vocabulary.
    pub fn survival(&mut self, code: &[u32], text: &[u32]) -> f64 {
        if code.is_empty() {
            return 0.0;
        }
        let blocks = code.len().div_ceil(WORD);
        // One mask of code rows per distinct token; row i is bit i % 64 of block i / 64.
        let mut masks: Vec<u64> = Vec::new();
        for (row, &id) in code.iter().enumerate() {
            let slot = &mut self.slots[id as usize];
            if *slot == NONE {
                *slot = (masks.len() / blocks) as u32;
                masks.resize(masks.len() + blocks, 0);
            }
            masks[*slot as usize * blocks + row / WORD] |= 1 << (row % WORD);
        }
        let distance = best_substring_distance(code.len(), &masks, text.iter().map(|&id| self.slots[id as usize]));
        for &id in code {
            self.slots[id as usize] = NONE;
        }
        share(distance, code.len())
    }
}

/// The least insert/delete distance between the code (`rows` tokens, `masks` per distinct token)
/// and any stretch of the text (`slots`: each text token's mask, `NONE` when the code lacks it).
///
/// Column by column over the text, the vertical differences of the programme's column
/// (`D[i][j] - D[i-1][j]`, each -1, 0 or +1) are kept as two bit vectors over the code's rows. With
/// `e` = -1 on a match and +1 otherwise, a cell is `D[i-1][j-1] + 1 + min(e, h, v)` for the
/// incoming horizontal and vertical differences `h`, `v`; written as booleans this gives, per row,
/// - `Mh_out = Pv & (Eq | Mh_in)`, `Ph_out = Mv | (!Eq & !Pv & !Mh_in) | (!Eq & Pv & Ph_in)`
/// - `Mv_out = Ph_in & (Eq | Mv)`, `Pv_out = Mh_in | (!Eq & !Ph_in & !Mv) | (!Eq & Ph_in & Pv)`
///
/// where `Mh_in`/`Ph_in` of a row is `Mh_out`/`Ph_out` of the row above. The two horizontal rules are
/// carry chains (`out = G | (P & out_above)`), which one addition resolves for 64 rows at once.
fn best_substring_distance(rows: usize, masks: &[u64], slots: impl Iterator<Item = u32>) -> usize {
    let blocks = rows.div_ceil(WORD);
    let last_bit = (rows - 1) % WORD;
    let mut score = rows;
    let mut best = rows;
    let mut step = |ph_last: u64, mh_last: u64| {
        score = score + ((ph_last >> last_bit) & 1) as usize - ((mh_last >> last_bit) & 1) as usize;
        best = best.min(score);
        best == 0
    };
    if blocks == 1 {
        // Most code fits one block: the column lives in two registers.
        let (mut pv, mut mv) = (u64::MAX, 0u64);
        for slot in slots {
            let eq = if slot == NONE { 0 } else { masks[slot as usize] };
            let (ph_out, mh_out);
            (pv, mv, ph_out, mh_out) = column(eq, pv, mv, 0, 0);
            if step(ph_out, mh_out) {
                break;
            }
        }
    } else {
        let mut pv = vec![u64::MAX; blocks];
        let mut mv = vec![0u64; blocks];
        for slot in slots {
            // The text's row 0 is free (any start): no horizontal difference enters the first row.
            let (mut ph_out, mut mh_out) = (0u64, 0u64);
            for block in 0..blocks {
                let eq = if slot == NONE { 0 } else { masks[slot as usize * blocks + block] };
                (pv[block], mv[block], ph_out, mh_out) = column(eq, pv[block], mv[block], ph_out >> 63, mh_out >> 63);
            }
            if step(ph_out, mh_out) {
                break;
            }
        }
    }
    best
}

/// One block of a text column: from the block's match mask, its vertical differences and the
/// horizontal ones leaving the row above it (`ph_above`, `mh_above`: 0 or 1), the new vertical
/// differences and the horizontal ones leaving each row.
fn column(eq: u64, pv: u64, mv: u64, ph_above: u64, mh_above: u64) -> (u64, u64, u64, u64) {
    let mh_out = carry_chain(pv & eq, pv, mh_above);
    let mh_in = (mh_out << 1) | mh_above;
    let ph_out = carry_chain(mv | (!eq & !pv & !mh_in), !eq & pv, ph_above);
    let ph_in = (ph_out << 1) | ph_above;
    let pv_out = mh_in | (!eq & !ph_in & !mv) | (!eq & ph_in & pv);
    let mv_out = ph_in & (eq | mv);
    (pv_out, mv_out, ph_out, mh_out)
}

/// `out[i] = generate[i] | (propagate[i] & out[i-1])` for the 64 rows of a block, `out[-1]` being
/// `carry_in`: the carries of `generate + (generate | propagate) + carry_in`.
fn carry_chain(generate: u64, propagate: u64, carry_in: u64) -> u64 {
    let either = generate | propagate;
    let sum = generate.wrapping_add(either).wrapping_add(carry_in);
    let carries_in = sum ^ generate ^ either;
    generate | (propagate & carries_in)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fast(code: &str, text: &str) -> f64 {
        let mut vocabulary = Vocabulary::default();
        let (code, text) = (vocabulary.ids(code), vocabulary.ids(text));
        vocabulary.survival(&code, &text)
    }

    #[test]
    fn tokens_ignore_layout_and_quote_style() {
        assert_eq!(tokens("x = f('a',\n    b)"), ["x", "=", "f", "(", "\"", "a", "\"", ",", "b", ")"]);
        let text = "def g():\n    x = f(\n        \"a\",\n        b,\n    )\n";
        assert_eq!(plain_survival("x = f('a', b)", text), 1.0 - 1.0 / 10.0);
        assert_eq!(fast("x = f('a', b)", text), 1.0 - 1.0 / 10.0);
    }

    #[test]
    fn kept_partly_deleted_renamed_and_gone() {
        let code = "total = price * quantity + shipping_cost";
        for share in [plain_survival, fast] {
            assert_eq!(share(code, &format!("import os\n\n{code}\nprint(total)\n")), 1.0);
            assert_eq!(share(code, "import os\n\ntotal = price * quantity\nprint(total)\n"), 5.0 / 7.0);
            assert_eq!(share(code, "total = cost * quantity + shipping_cost"), 5.0 / 7.0, "one token out, one in");
            // The same common tokens scattered over a file are not the code.
            assert!(share(code, "total = 1\nx = price\ny = quantity\n+ shipping\n") < 0.67);
            assert_eq!(share(code, ""), 0.0);
            assert_eq!(share("", "anything"), 0.0);
        }
    }

    /// Token streams over a small alphabet (so matches are frequent), code long enough to span
    /// several 64-row blocks.
    fn stream(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c"), Just("("), Just("x_1")], 0..max)
            .prop_map(|tokens| tokens.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn bit_parallel_equals_the_plain_programme(code in stream(200), text in stream(300)) {
            prop_assert_eq!(fast(&code, &text), plain_survival(&code, &text));
        }

        #[test]
        fn equal_when_the_code_is_a_mutated_stretch_of_the_text(
            text in stream(400), start in 0usize..400, len in 1usize..180, cuts in proptest::collection::vec(0usize..180, 0..12)
        ) {
            let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
            let start = start.min(words.len());
            let mut code: Vec<&str> = words[start..(start + len).min(words.len())].to_vec();
            for cut in cuts {
                if cut < code.len() {
                    code.remove(cut);
                    code.insert(cut / 2, "zz");
                }
            }
            let code = code.join(" ");
            prop_assert_eq!(fast(&code, &text), plain_survival(&code, &text));
        }
    }
}
