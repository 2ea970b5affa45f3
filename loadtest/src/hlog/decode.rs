//! Decoding a log's histogram within bounded memory: its bytes are checked before
//! hdrhistogram's decoder trusts what they claim.

use std::io::{self, Read as _};

use base64::Engine as _;
use flate2::read::ZlibDecoder;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

use super::MAX_COUNTERS;

/// Cookies of HdrHistogram's V2 encoding, plain and compressed (the base `| 0x10`).
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// The V2 header: cookie, payload length, normalizing offset, significant digits (u32 each),
/// lowest and highest trackable values (u64), integer-to-double ratio (f64).
const V2_HEADER: usize = 40;

/// Decodes one histogram of a log (base64 of V2 + DEFLATE) within bounded memory: what is
/// inflated and allocated is bounded by the counters its header may claim.
pub(super) fn decode(encoded: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("expected a base64 histogram: {e}"))?;
    let v2 = inflate(&bytes)?;
    Deserializer::new()
        .deserialize(&mut v2.as_slice())
        .map_err(|e| format!("bad histogram: {e}"))
}

/// The V2 histogram inside a compressed one (cookie, length, zlib stream), inflated as far
/// as its checked header says, and checked (see [`check_v2_header`], [`scan_counts`]).
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let cookie = be_u32(bytes, 0);
    if cookie != Some(V2_COMPRESSED_COOKIE) {
        return Err(match cookie {
            Some(c) => format!(
                "expected a V2 + DEFLATE histogram (cookie {V2_COMPRESSED_COOKIE:#010x}), got cookie {c:#010x}"
            ),
            None => format!("expected a V2 + DEFLATE histogram, got {} bytes", bytes.len()),
        });
    }
    let there = bytes.len().saturating_sub(8);
    let claimed = be_u32(bytes, 4).map_or(usize::MAX, |n| n as usize);
    let Some(zlib) = bytes.get(8..8usize.saturating_add(claimed)) else {
        return Err(format!(
            "the histogram claims {claimed} compressed bytes, {there} are there"
        ));
    };
    let mut inflater = ZlibDecoder::new(zlib);
    let mut v2 = vec![0; V2_HEADER];
    let mut got = 0;
    while got < V2_HEADER {
        match inflater.read(&mut v2[got..]) {
            Ok(0) => {
                return Err(format!(
                    "the histogram is {got} bytes, shorter than its {V2_HEADER}-byte header"
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("bad compressed histogram: {e}")),
        }
    }
    let (counters, payload) = check_v2_header(&v2)?;
    inflater
        .take(payload)
        .read_to_end(&mut v2)
        .map_err(|e| format!("bad compressed histogram: {e}"))?;
    let there = v2.len() - V2_HEADER;
    if (there as u64) < payload {
        return Err(format!(
            "the histogram claims {payload} bytes of counts, {there} are there"
        ));
    }
    scan_counts(&v2[V2_HEADER..], counters)?;
    Ok(v2)
}

/// Checks what hdrhistogram's decoder would trust in a V2 header: the cookie, the counter
/// array's size (at most [`MAX_COUNTERS`]), the payload length against what that many
/// counters take. The number of counters, and the payload length.
fn check_v2_header(v2: &[u8]) -> Result<(u64, u64), String> {
    let header = (
        be_u32(v2, 0),
        be_u32(v2, 4),
        be_u32(v2, 12),
        be_u64(v2, 16),
        be_u64(v2, 24),
    );
    let (Some(cookie), Some(payload), Some(digits), Some(low), Some(high)) = header else {
        return Err(format!(
            "the histogram is {} bytes, shorter than its {V2_HEADER}-byte header",
            v2.len()
        ));
    };
    if cookie != V2_COOKIE {
        return Err(format!(
            "expected a V2 histogram (cookie {V2_COOKIE:#010x}) inside the compressed one, got cookie {cookie:#010x}"
        ));
    }
    if digits > 5 || low == 0 || high < low.saturating_mul(2) || high > i64::MAX as u64 {
        return Err(format!(
            "expected 0 to 5 significant digits and a value range within 1..2^63 (highest at least twice the lowest), got {digits} digits, {low}..{high}"
        ));
    }
    let Some(counters) = counters(low, high, digits).filter(|&n| n <= MAX_COUNTERS) else {
        return Err(format!(
            "a histogram of {low}..{high} at {digits} significant digits has more than the {MAX_COUNTERS} counters taken"
        ));
    };
    // A count, or a run of empty counters, takes at most 9 bytes.
    let payload = u64::from(payload);
    if payload > 9 * counters {
        return Err(format!(
            "the histogram claims {payload} bytes of counts, more than its {counters} counters take"
        ));
    }
    Ok((counters, payload))
}

/// The number of counters hdrhistogram gives a histogram of `low..=high` at `digits`
/// significant digits (as its `new_with_bounds`); `None` if it refuses them.
fn counters(low: u64, high: u64, digits: u32) -> Option<u64> {
    // Unit resolution up to 2 × 10^digits: a power-of-two sub-bucket count covering it.
    let largest = 2 * 10u32.checked_pow(digits)?;
    let sub_bucket_magnitude = (largest - 1).ilog2() + 1;
    let unit_magnitude = low.checked_ilog2()?;
    if unit_magnitude + sub_bucket_magnitude > 63 {
        return None;
    }
    let mut smallest_untrackable = 1u64 << (unit_magnitude + sub_bucket_magnitude);
    let mut buckets = 1u64;
    while smallest_untrackable <= high {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    Some((buckets + 1) << (sub_bucket_magnitude - 1))
}

/// Walks a V2 payload's counts (zig-zag LEB128, at most 9 bytes; a negative number is a run
/// of empty counters) and checks each lands among `counters`.
fn scan_counts(mut payload: &[u8], counters: u64) -> Result<(), String> {
    let mut index = 0u64;
    while !payload.is_empty() {
        let (value, used) = varint(payload).ok_or("the histogram's counts end inside a number")?;
        payload = payload.get(used..).unwrap_or_default();
        let n = ((value >> 1) as i64) ^ -((value & 1) as i64);
        if n < 0 {
            let zeros = n.unsigned_abs();
            if zeros > counters {
                return Err(format!(
                    "the histogram skips {zeros} counters, more than its {counters}"
                ));
            }
            index = index.saturating_add(zeros);
        } else {
            if n > 0 && index >= counters {
                return Err(format!(
                    "the histogram has counts past its {counters} counters"
                ));
            }
            index += 1;
        }
    }
    Ok(())
}

/// HdrHistogram's LEB128: 7 bits a byte, low first, the ninth byte whole; the value and the
/// bytes it took, `None` if `bytes` end inside it.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        if i == 8 {
            return Some((value | u64::from(b) << 56, 9));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlog::read;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer, V2Serializer};
    use std::io::Write;

    /// `v2` compressed as a log holds it: cookie, length, zlib stream.
    fn compressed(v2: &[u8]) -> Vec<u8> {
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(v2).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut out = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        out.extend_from_slice(&(zlib.len() as u32).to_be_bytes());
        out.extend_from_slice(&zlib);
        out
    }

    fn log_of(histogram: &[u8]) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(histogram);
        format!("#[Histogram log format version 1.3]\n0.000,1.000,0.000,{encoded}\n").into_bytes()
    }

    /// A V2 encoding of a histogram of 1..1000 at 3 digits holding 5, patched by `patch`.
    fn v2(patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut h = Histogram::<u64>::new_with_max(1000, 3).unwrap();
        h.record(5).unwrap();
        let mut v2 = Vec::new();
        V2Serializer::new().serialize(&h, &mut v2).unwrap();
        patch(&mut v2);
        v2
    }

    fn set_payload(v2: &mut Vec<u8>, payload: &[u8]) {
        v2.truncate(V2_HEADER);
        v2[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        v2.extend_from_slice(payload);
    }

    /// Histograms built to make the decoder allocate what they claim, or to trip it: each is
    /// refused naming its line, without a panic and without the allocation.
    #[test]
    fn hostile_histograms_are_refused() {
        let counters = counters(1, 1000, 3).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "4 GiB payload claimed",
                compressed(&v2(|v| {
                    v[4..8].copy_from_slice(&0xffff_fff0_u32.to_be_bytes())
                })),
                "claims 4294967280 bytes of counts, more than",
            ),
            (
                "more payload claimed than there",
                compressed(&v2(|v| v[4..8].copy_from_slice(&100u32.to_be_bytes()))),
                "claims 100 bytes of counts, 2 are there",
            ),
            (
                "5 digits up to 2^63 (6 million counters)",
                compressed(&v2(|v| {
                    v[12..16].copy_from_slice(&5u32.to_be_bytes());
                    v[16..24].copy_from_slice(&1u64.to_be_bytes());
                    v[24..32].copy_from_slice(&(i64::MAX as u64).to_be_bytes());
                })),
                "more than the 4194304 counters",
            ),
            (
                "values past 2^63",
                compressed(&v2(|v| v[24..32].copy_from_slice(&u64::MAX.to_be_bytes()))),
                "within 1..2^63",
            ),
            (
                "6 digits",
                compressed(&v2(|v| v[12..16].copy_from_slice(&6u32.to_be_bytes()))),
                "0 to 5 significant digits",
            ),
            (
                "lowest 0",
                compressed(&v2(|v| v[16..24].copy_from_slice(&0u64.to_be_bytes()))),
                "within 1..2^63",
            ),
            // zig-zag of u64::MAX is i64::MIN, which hdrhistogram negates (a panic in debug).
            (
                "a run of 2^63 zeros",
                compressed(&v2(|v| set_payload(v, &[0xff; 9]))),
                "skips 9223372036854775808 counters",
            ),
            (
                "a count past the array",
                compressed(&v2(|v| {
                    // Skip every counter (zig-zag of -counters, LEB128), then a count of 1.
                    let mut payload = Vec::new();
                    let mut z = (counters << 1) - 1;
                    while z >= 0x80 {
                        payload.push((z as u8) | 0x80);
                        z >>= 7;
                    }
                    payload.push(z as u8);
                    payload.push(2);
                    set_payload(v, &payload);
                })),
                "counts past its",
            ),
            (
                "a count cut short",
                compressed(&v2(|v| set_payload(v, &[0x80]))),
                "end inside a number",
            ),
            (
                "a short header",
                compressed(&v2(|v| v.truncate(30))),
                "shorter than its 40-byte header",
            ),
            ("plain V2", v2(|_| ()), "expected a V2 + DEFLATE histogram"),
            (
                "compressed length claimed",
                {
                    let mut c = compressed(&v2(|_| ()));
                    c[4..8].copy_from_slice(&0x7fff_ffff_u32.to_be_bytes());
                    c
                },
                "claims 2147483647 compressed bytes",
            ),
            (
                "a zlib bomb",
                {
                    let mut bomb = v2(|v| v.truncate(V2_HEADER));
                    bomb[4..8].copy_from_slice(&(20u32 << 20).to_be_bytes());
                    bomb.resize(20 << 20, 0);
                    compressed(&bomb)
                },
                "claims 20971520 bytes of counts, more than",
            ),
            (
                "corrupt zlib",
                {
                    let mut c = compressed(&v2(|_| ()));
                    c[8] ^= 0xff;
                    c
                },
                "bad compressed histogram",
            ),
            (
                "not V2 inside",
                compressed(&v2(|v| v[0] ^= 1)),
                "expected a V2 histogram",
            ),
            (
                "a normalizing offset",
                compressed(&v2(|v| v[8..12].copy_from_slice(&1u32.to_be_bytes()))),
                "bad histogram",
            ),
        ];
        for (what, bytes, expected) in cases {
            let e = read(&log_of(&bytes)).unwrap_err();
            assert!(e.starts_with("line 2: "), "{what}: {e}");
            assert!(e.contains(expected), "{what}: {e}");
        }
        // Within the bounds, unusual histograms decode: 4 digits up to 2^63 - 1, 5 digits
        // over an hour, a lowest value of 1000.
        for (low, high, digits) in [
            (1, i64::MAX as u64, 4),
            (1, 3_600_000_000_000, 5),
            (1000, 1 << 40, 3),
            (1, 2, 0),
        ] {
            let mut h = Histogram::<u64>::new_with_bounds(low, high, digits).unwrap();
            h.record(high / 2).unwrap();
            h.record(low).unwrap();
            let mut bytes = Vec::new();
            V2DeflateSerializer::new()
                .serialize(&h, &mut bytes)
                .unwrap();
            let read = read(&log_of(&bytes)).unwrap();
            assert_eq!(read[0].histogram, h);
        }
    }

    /// The bound on counters is hdrhistogram's own count.
    #[test]
    fn counters_are_counted_as_hdrhistogram_does() {
        for digits in 0..=5u8 {
            for low in [1, 2, 3, 1000, 1 << 20, 1 << 40] {
                for high in [
                    2 * low,
                    1000 * low,
                    1 << 41,
                    1 << 62,
                    i64::MAX as u64,
                    u64::MAX,
                ] {
                    let Ok(h) = Histogram::<u64>::new_with_bounds(low, high, digits) else {
                        assert_eq!(counters(low, high, u32::from(digits)), None);
                        continue;
                    };
                    if high <= i64::MAX as u64 {
                        assert_eq!(
                            counters(low, high, u32::from(digits)),
                            Some(h.distinct_values() as u64),
                            "{low}..{high} at {digits}"
                        );
                    }
                }
            }
        }
    }
}
