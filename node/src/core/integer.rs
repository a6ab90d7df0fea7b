//! Redis's strict integer syntax for string values (`string2ll`): optional `-`, digits, no `+`,
//! no spaces, no leading zeros, fits in an `i64`.

pub fn parse_strict_i64(bytes: &[u8]) -> Option<i64> {
    const LONGEST_I64_DIGITS: usize = 20;
    if bytes.is_empty() || bytes.len() > LONGEST_I64_DIGITS {
        return None;
    }
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    match digits {
        [] => return None,
        [b'0'] => return if negative { None } else { Some(0) },
        [b'0', ..] => return None,
        _ => {}
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::parse_strict_i64;

    #[test]
    fn accepts_only_canonical_integers() {
        let cases: &[(&str, Option<i64>)] = &[
            ("0", Some(0)),
            ("42", Some(42)),
            ("-42", Some(-42)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-0", None),
            ("007", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1.5", None),
            ("", None),
            ("-", None),
            ("abc", None),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_strict_i64(text.as_bytes()), expected, "{text:?}");
        }
    }
}
