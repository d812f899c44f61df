//! Near-duplicate clusters for SoftDedup, the BigCode recipe: 5-token shingles, 256 MinHash
//! permutations, LSH with 25 bands of 10 rows, pairs kept at an estimated Jaccard ≥ 0.7, clusters
//! by union-find.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

const PERMUTATIONS: usize = 256;
const BANDS: usize = 25;
const ROWS: usize = 10;
const SHINGLE: usize = 5;
pub const JACCARD: f64 = 0.7;
/// 2^61 − 1, the modulus of the permutations' universal hashing.
const PRIME: u64 = (1 << 61) - 1;

/// The cluster of each text: texts in one cluster share its number (the smallest index in it).
pub fn clusters(texts: &[&str]) -> Vec<usize> {
    let permutations = permutations();
    let signatures: Vec<[u64; PERMUTATIONS]> = texts.iter().map(|t| signature(t, &permutations)).collect();
    let mut parent: Vec<usize> = (0..texts.len()).collect();
    for band in 0..BANDS {
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, signature) in signatures.iter().enumerate() {
            buckets.entry(hash(&signature[band * ROWS..(band + 1) * ROWS])).or_default().push(i);
        }
        for members in buckets.values().filter(|m| m.len() > 1) {
            let first = members[0];
            for &other in &members[1..] {
                if estimated_jaccard(&signatures[first], &signatures[other]) >= JACCARD {
                    union(&mut parent, first, other);
                }
            }
        }
    }
    (0..texts.len()).map(|i| find(&mut parent, i)).collect()
}

/// The share of equal MinHash values: an estimate of the Jaccard similarity of the shingle sets.
pub fn estimated_jaccard(a: &[u64; PERMUTATIONS], b: &[u64; PERMUTATIONS]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / PERMUTATIONS as f64
}

pub fn signature(text: &str, permutations: &[(u64, u64)]) -> [u64; PERMUTATIONS] {
    let tokens = crate::syntax::tokens(text);
    let shingles: Vec<u64> =
        if tokens.len() < SHINGLE { vec![hash(&tokens)] } else { tokens.windows(SHINGLE).map(hash).collect() };
    let mut signature = [u64::MAX; PERMUTATIONS];
    for shingle in shingles {
        let x = shingle % PRIME;
        for (slot, (a, b)) in signature.iter_mut().zip(permutations) {
            let value = ((*a as u128 * x as u128 + *b as u128) % PRIME as u128) as u64;
            *slot = (*slot).min(value);
        }
    }
    signature
}

/// The same permutations on every run (splitmix64 from a fixed seed): clusters are reproducible.
pub fn permutations() -> Vec<(u64, u64)> {
    let mut state = 0x6d61_7275_6e6f_6368u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..PERMUTATIONS).map(|_| (next() % (PRIME - 1) + 1, next() % PRIME)).collect()
}

fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    // SipHash with fixed keys: the same value hashes the same in every process.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra.max(rb)] = ra.min(rb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_duplicates_cluster_and_different_code_does_not() {
        let base = "def total(items):\n    result = 0\n    for item in items:\n        result += item.price * item.quantity\n    return round(result, 2)\n";
        let renamed_one = base.replace("round(result, 2)", "round(result, 3)");
        let other = "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        self.items.append(x)\n";
        let texts = [base, renamed_one.as_str(), other, base];
        let clusters = clusters(&texts);
        assert_eq!(clusters, vec![0, 0, 2, 0]);
    }

    #[test]
    fn the_estimate_follows_the_true_jaccard() {
        let permutations = permutations();
        let words: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let a = words[..150].join(" ");
        let b = words[50..].join(" ");
        // Shingles: 146 each, 96 shared → Jaccard 96 / 196 ≈ 0.49.
        let estimate = estimated_jaccard(&signature(&a, &permutations), &signature(&b, &permutations));
        assert!((estimate - 96.0 / 196.0).abs() < 0.08, "{estimate}");
    }
}
