//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B), decoded with a table built once.
//!
//! The code is canonical: a symbol's code follows from the code lengths alone (codes of
//! one length are consecutive, in symbol order). So [`LENGTHS`] is the whole table, and
//! decoding is, per bit, a comparison against the first code of the length read so far.
//! `loona-hpack`'s decoder builds a two-level `HashMap` of the 257 codes for every string
//! it decodes and looks each bit up in it: ~25,000 instructions for a 15-byte authority,
//! and most of a full header block's decode (1.4 M instructions a request).
//! [`plain_block`] writes a header block's Huffman-coded strings out raw, so the full
//! decoder that follows never meets one.

use super::authority::Reader;
use std::sync::LazyLock;

/// Code length of each symbol, 0–255 then EOS (256), from RFC 7541 Appendix B.
#[rustfmt::skip]
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28,
    30, 28, 28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6,
    6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5,
    6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20,
    22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23,
    23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21,
    22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20,
    19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21,
    21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26,
    23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// The longest code.
const LONGEST: usize = 30;

/// The end-of-string symbol: never in a string (padding is its first bits).
const EOS: u16 = 256;

/// Per code length: its first code, and where its symbols start in `symbols`.
struct Canonical {
    first_code: [u32; LONGEST + 1],
    count: [u32; LONGEST + 1],
    start: [usize; LONGEST + 1],
    /// Symbols ordered by (length, symbol): the order of their codes.
    symbols: [u16; 257],
}

static CODE: LazyLock<Canonical> = LazyLock::new(|| {
    let mut c = Canonical {
        first_code: [0; LONGEST + 1],
        count: [0; LONGEST + 1],
        start: [0; LONGEST + 1],
        symbols: [0; 257],
    };
    for &len in &LENGTHS {
        c.count[usize::from(len)] += 1;
    }
    let (mut code, mut at) = (0u32, 0usize);
    for len in 1..=LONGEST {
        code = (code + c.count[len - 1]) << 1;
        c.first_code[len] = code;
        c.start[len] = at;
        at += c.count[len] as usize;
    }
    let mut next = c.start;
    for (symbol, &len) in (0u16..).zip(&LENGTHS) {
        c.symbols[next[usize::from(len)]] = symbol;
        next[usize::from(len)] += 1;
    }
    c
});

/// `raw` Huffman-decoded; `None` when it is not a valid HPACK Huffman string (EOS inside,
/// a code over 30 bits, padding longer than 7 bits or not all ones).
pub fn decode(raw: &[u8]) -> Option<Vec<u8>> {
    let c = &*CODE;
    let mut out = Vec::with_capacity(raw.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in raw {
        for shift in (0..8).rev() {
            code = code << 1 | u32::from(byte >> shift & 1);
            len += 1;
            let offset = code.wrapping_sub(c.first_code[len]);
            if offset < c.count[len] {
                let symbol = c.symbols[c.start[len] + offset as usize];
                if symbol == EOS {
                    return None;
                }
                out.push(symbol as u8);
                (code, len) = (0, 0);
            } else if len == LONGEST {
                return None;
            }
        }
    }
    (len <= 7 && code == (1 << len) - 1).then_some(out)
}

/// `block` (a complete HPACK header block) with every Huffman-coded string literal written
/// raw, the same header list for any decoder (the dynamic table holds decoded strings);
/// `None` when it does not parse (the full decoder then says why).
pub fn plain_block(block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len() * 2);
    let mut r = Reader { buf: block };
    while let Some(&first) = r.buf.first() {
        let before = r.buf;
        // Indexed field, table size update, or a literal (its name index, then strings).
        let (prefix, strings) = match first {
            b if b & 0x80 != 0 => (7, 0),
            b if b & 0xC0 == 0x40 => (6, 1),
            b if b & 0xE0 == 0x20 => (5, 0),
            _ => (4, 1),
        };
        let name = r.integer(prefix)?;
        out.extend_from_slice(&before[..before.len() - r.buf.len()]);
        let strings = if strings == 1 && name == 0 {
            2
        } else {
            strings
        };
        for _ in 0..strings {
            let (huffman, raw) = r.string()?;
            let decoded;
            let text = if huffman {
                decoded = decode(raw)?;
                &decoded[..]
            } else {
                raw
            };
            super::authority::string(text, &mut out);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::huffman::HuffmanDecoder;

    #[test]
    fn rfc_7541_examples_decode() {
        // C.4.1 and C.4.2: "www.example.com", "no-cache"; C.4.3: "custom-key", "custom-value".
        let cases: [(&[u8], &str); 4] = [
            (
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
                "www.example.com",
            ),
            (&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], "no-cache"),
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
                "custom-key",
            ),
            (
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
                "custom-value",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(decode(raw).as_deref(), Some(want.as_bytes()), "{want}");
        }
        assert_eq!(decode(&[]).as_deref(), Some(&[][..]));
        // Padding of 8 bits, padding with a zero, EOS itself.
        assert_eq!(decode(&[0xff]), None);
        assert_eq!(decode(&[0xfe]), None);
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xfc]), None);
    }

    proptest::proptest! {
        #[test]
        fn it_decodes_as_loona_hpack_does(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24)) {
            let want = HuffmanDecoder::new().decode(&raw).ok();
            proptest::prop_assert_eq!(decode(&raw), want);
        }
    }

    #[test]
    fn a_blocks_strings_are_written_raw() {
        // RFC 7541 C.4.1 (Huffman) and C.3.1 (the same request, raw).
        let huffman = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let mut raw = vec![0x82, 0x86, 0x84, 0x41, 0x0f];
        raw.extend_from_slice(b"www.example.com");
        assert_eq!(plain_block(&huffman), Some(raw.clone()));
        assert_eq!(plain_block(&raw), Some(raw));
        // A literal name and value, without indexing, Huffman-coded: "custom-key", then
        // '0' and padding that is not all ones.
        let block = [
            0x00, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f, 0x81, 0x00,
        ];
        assert_eq!(plain_block(&block), None, "a bad Huffman value");
        assert_eq!(
            plain_block(&[0x41, 0x85, 0x01]),
            None,
            "a string past the end"
        );
    }
}
