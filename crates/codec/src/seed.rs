//! The seed problem, exactly as stated: cut a string from the front into units of `k`
//! characters (the last one may be shorter), write each maximal run of `c > 1` equal units as
//! the decimal count followed by the unit, and return the shortest result over every `k`.
//!
//! The naive method compares every unit with its neighbour character by character, which is
//! O(n) per unit length and O(n²) overall. Here one query answers "how far does the run that
//! starts at unit `i` go": the longest common prefix of the suffixes at `i·k` and `(i+1)·k`
//! says exactly how long the text keeps period `k` from there. A suffix array with an LCP
//! sparse table answers such a query in O(1), so each unit length costs one query per run,
//! at most `n / k` of them, and the whole search is O(n log n) — and exact, unlike a hash.

/// Length of the shortest compression of `s` over all unit lengths (see the module docs).
///
/// Lengths count characters (`char`s), so the answer is the same for any script; the seed
/// problem's lowercase ASCII strings are the common case. The empty string compresses to 0.
///
/// ```
/// assert_eq!(raftkv_codec::shortest_compressed_len("aabbaccc"), 7); // "2a2ba3c"
/// assert_eq!(raftkv_codec::shortest_compressed_len("abcabcdede"), 8); // "2abcdede"
/// ```
pub fn shortest_compressed_len(s: &str) -> usize {
    let text: Vec<u32> = s.chars().map(u32::from).collect();
    let n = text.len();
    if n < 2 {
        return n;
    }
    let lcp = LcpIndex::new(&text);
    let mut best = n;
    // A unit longer than n/2 leaves at most one full unit, so nothing can repeat.
    for k in 1..=n / 2 {
        let full = n / k;
        let mut len = n - full * k; // the shorter tail is copied as is
        let mut i = 0;
        while i < full && len < best {
            let run = if i + 1 < full {
                // The text has period k over lcp(i·k, (i+1)·k) characters past unit i + 1,
                // so that many whole units after unit i equal it.
                let periodic = lcp.lcp(i * k, (i + 1) * k);
                (1 + periodic / k).min(full - i)
            } else {
                1
            };
            len += if run > 1 { decimal_digits(run) + k } else { k };
            i += run;
        }
        best = best.min(len);
    }
    best
}

/// Number of decimal digits of `n` (n ≥ 1).
fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Longest-common-prefix queries between any two suffixes of a text, in O(1) each.
struct LcpIndex {
    /// `rank[i]`: position of suffix `i` in sorted order.
    rank: Vec<u32>,
    /// `table[j][r]`: minimum of the adjacent-suffix LCPs over sorted positions `r .. r + 2^j`.
    table: Vec<Vec<u32>>,
    len: usize,
}

impl LcpIndex {
    fn new(text: &[u32]) -> Self {
        let n = text.len();
        let sa = suffix_array(text);
        let mut rank = vec![0u32; n];
        for (r, &i) in sa.iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        // Kasai: adjacent[r] = lcp(sa[r], sa[r + 1]).
        let mut adjacent = vec![0u32; n.saturating_sub(1)];
        let mut h = 0usize;
        for i in 0..n {
            let r = rank[i] as usize;
            if r + 1 == n {
                h = 0;
                continue;
            }
            let j = sa[r + 1] as usize;
            while i + h < n && j + h < n && text[i + h] == text[j + h] {
                h += 1;
            }
            adjacent[r] = h as u32;
            h = h.saturating_sub(1);
        }
        let mut table = vec![adjacent];
        let mut width = 1;
        while 2 * width <= table[0].len() {
            let prev = &table[table.len() - 1];
            let next: Vec<u32> = (0..prev.len() - width)
                .map(|r| prev[r].min(prev[r + width]))
                .collect();
            table.push(next);
            width *= 2;
        }
        Self {
            rank,
            table,
            len: n,
        }
    }

    /// Length of the longest common prefix of the suffixes starting at `a` and `b` (`a != b`).
    fn lcp(&self, a: usize, b: usize) -> usize {
        debug_assert!(a != b && a < self.len && b < self.len);
        let (ra, rb) = (self.rank[a] as usize, self.rank[b] as usize);
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        // min over adjacent[lo .. hi]
        let span = hi - lo;
        let level = (usize::BITS - 1 - span.leading_zeros()) as usize;
        let row = &self.table[level];
        row[lo].min(row[hi - (1 << level)]) as usize
    }
}

/// Suffix array by prefix doubling: O(n log² n), ample for the seed problem's sizes.
fn suffix_array(text: &[u32]) -> Vec<u32> {
    let n = text.len();
    let mut sa: Vec<u32> = (0..n as u32).collect();
    let mut rank: Vec<u64> = text.iter().map(|&c| u64::from(c)).collect();
    let mut next = vec![0u64; n];
    let mut h = 1;
    loop {
        // Key of suffix i: (rank[i], rank[i + h] + 1, or 0 past the end).
        let key = |i: u32| {
            let i = i as usize;
            (rank[i], if i + h < n { rank[i + h] + 1 } else { 0 })
        };
        sa.sort_unstable_by_key(|&i| key(i));
        next[sa[0] as usize] = 0;
        for w in 1..n {
            let bump = u64::from(key(sa[w - 1]) != key(sa[w]));
            next[sa[w] as usize] = next[sa[w - 1] as usize] + bump;
        }
        std::mem::swap(&mut rank, &mut next);
        if rank[sa[n - 1] as usize] as usize == n - 1 || h >= n {
            return sa;
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The problem statement, transcribed literally: the reference for the fast version.
    fn naive(s: &str) -> usize {
        let chars: Vec<char> = s.chars().collect();
        let n = chars.len();
        let mut best = n;
        for k in 1..=n {
            let pieces: Vec<&[char]> = chars.chunks(k).collect();
            let mut out = String::new();
            let mut i = 0;
            while i < pieces.len() {
                let mut j = i + 1;
                while j < pieces.len() && pieces[j] == pieces[i] {
                    j += 1;
                }
                if j - i > 1 {
                    out.push_str(&(j - i).to_string());
                }
                out.extend(pieces[i].iter());
                i = j;
            }
            best = best.min(out.chars().count());
        }
        best
    }

    #[test]
    fn the_five_examples() {
        assert_eq!(shortest_compressed_len("aabbaccc"), 7);
        assert_eq!(shortest_compressed_len("ababcdcdababcdcd"), 9);
        assert_eq!(shortest_compressed_len("abcabcdede"), 8);
        assert_eq!(shortest_compressed_len("abcabcabcabcdededededede"), 14);
        assert_eq!(shortest_compressed_len("xababcdcdababcdcd"), 17);
    }

    #[test]
    fn edges() {
        assert_eq!(shortest_compressed_len(""), 0);
        assert_eq!(shortest_compressed_len("a"), 1);
        assert_eq!(shortest_compressed_len("aa"), 2); // "2a" is no shorter
        assert_eq!(shortest_compressed_len("aaa"), 2);
        // A run of 10 needs two digits: "10a".
        assert_eq!(shortest_compressed_len(&"a".repeat(10)), 3);
        assert_eq!(shortest_compressed_len(&"a".repeat(1000)), 5); // "1000a"
        assert_eq!(shortest_compressed_len(&"ab".repeat(500)), 5); // "500ab"
        // Units count characters, not bytes.
        assert_eq!(shortest_compressed_len("éééé"), 2);
    }

    #[test]
    fn matches_naive_on_every_short_binary_string() {
        for len in 1..=12u32 {
            for bits in 0..(1u32 << len) {
                let s: String = (0..len)
                    .map(|i| if bits >> i & 1 == 1 { 'b' } else { 'a' })
                    .collect();
                assert_eq!(shortest_compressed_len(&s), naive(&s), "{s}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn matches_naive_on_small_alphabets(s in "[ab]{1,200}") {
            prop_assert_eq!(shortest_compressed_len(&s), naive(&s));
        }

        #[test]
        fn matches_naive_on_lowercase(s in "[a-z]{1,300}") {
            prop_assert_eq!(shortest_compressed_len(&s), naive(&s));
        }

        #[test]
        fn matches_naive_on_repeated_units(unit in "[a-c]{1,7}", reps in 1usize..60, tail in "[a-c]{0,6}") {
            let s = format!("{}{}", unit.repeat(reps), tail);
            prop_assert_eq!(shortest_compressed_len(&s), naive(&s));
        }
    }

    #[test]
    fn matches_naive_at_full_size() {
        // 1000 characters with long periodic stretches, the problem's upper bound.
        let mut s = String::new();
        for (i, unit) in ["ab", "abc", "x", "abcdabcd", "q"]
            .iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            s.push_str(&unit.repeat(1 + i % 7));
        }
        s.truncate(1000);
        assert_eq!(shortest_compressed_len(&s), naive(&s));
    }
}
