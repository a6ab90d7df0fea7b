//! RESP2 reply encoding straight into a connection's output buffer: no intermediate frame
//! values, no allocation beyond the buffer's growth.

pub fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    push_sanitized(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `text` is the whole error line after `-`, code included (`ERR ...`, `NOAUTH ...`).
/// CR and LF become spaces so client-supplied text inside an error cannot break framing.
pub fn error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    push_sanitized(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn int(out: &mut Vec<u8>, value: i64) {
    out.push(b':');
    push_i64(out, value);
    out.extend_from_slice(b"\r\n");
}

pub fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    push_u64(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A bulk string holding the decimal text of `value` (SCAN cursors).
pub fn bulk_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let text = format_u64(&mut digits, value);
    bulk(out, text);
}

/// The nil bulk string, `$-1`.
pub fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// The nil array, `*-1` (COMMAND INFO of an unknown command).
pub fn nil_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

pub fn array(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    push_u64(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

fn push_sanitized(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

fn push_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_u64(out, value.unsigned_abs());
}

fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(format_u64(&mut digits, value));
}

fn format_u64(digits: &mut [u8; 20], mut value: u64) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_resp2() {
        type Encoder = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Encoder, &[u8])> = vec![
            (Box::new(ok), b"+OK\r\n"),
            (Box::new(|o| simple(o, "PONG")), b"+PONG\r\n"),
            (
                Box::new(|o| error(o, "ERR bad\r\nthing")),
                b"-ERR bad  thing\r\n",
            ),
            (Box::new(|o| int(o, 0)), b":0\r\n"),
            (Box::new(|o| int(o, i64::MIN)), b":-9223372036854775808\r\n"),
            (Box::new(|o| bulk(o, b"")), b"$0\r\n\r\n"),
            (Box::new(|o| bulk(o, b"a\r\nb")), b"$4\r\na\r\nb\r\n"),
            (
                Box::new(|o| bulk_u64(o, u64::MAX)),
                b"$20\r\n18446744073709551615\r\n",
            ),
            (Box::new(nil), b"$-1\r\n"),
            (Box::new(nil_array), b"*-1\r\n"),
            (Box::new(|o| array(o, 12)), b"*12\r\n"),
        ];
        for (encode, expected) in cases {
            let mut out = Vec::new();
            encode(&mut out);
            assert_eq!(out, expected, "{}", String::from_utf8_lossy(expected));
        }
    }
}
