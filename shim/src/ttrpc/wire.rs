//! ttrpc's framing: a 10-byte header (length, stream id, type, flags; big-endian) and a
//! protobuf body (`ttrpc.Request` or `ttrpc.Response`). What both our server and our event
//! client speak; nothing here blocks unless the socket does.

use std::io::{self, Read, Write};

pub const HEADER_LEN: usize = 10;
/// ttrpc's own limit for a message body.
pub const MAX_BODY: usize = 4 << 20;
pub const TYPE_REQUEST: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub stream_id: u32,
    pub kind: u8,
    pub flags: u8,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            length: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
            flags: b[9],
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&self.length.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8] = self.kind;
        b[9] = self.flags;
        b
    }
}

/// A whole frame (header and body) ready to write.
pub fn frame(stream_id: u32, kind: u8, body: &[u8]) -> Vec<u8> {
    let header = Header {
        length: body.len() as u32,
        stream_id,
        kind,
        flags: 0,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    out
}

/// Reads one frame from a blocking stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<(Header, Vec<u8>)> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h)?;
    let header = Header::parse(&h);
    if header.length as usize > MAX_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ttrpc message of {} bytes", header.length),
        ));
    }
    let mut body = vec![0u8; header.length as usize];
    r.read_exact(&mut body)?;
    Ok((header, body))
}

pub fn write_frame(w: &mut impl Write, stream_id: u32, kind: u8, body: &[u8]) -> io::Result<()> {
    w.write_all(&frame(stream_id, kind, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_big_endian() {
        let h = Header {
            length: 0x01020304,
            stream_id: 7,
            kind: TYPE_RESPONSE,
            flags: 4,
        };
        let b = h.encode();
        assert_eq!(b, [1, 2, 3, 4, 0, 0, 0, 7, 2, 4]);
        assert_eq!(Header::parse(&b), h);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut bytes = Header {
            length: (MAX_BODY + 1) as u32,
            stream_id: 1,
            kind: TYPE_REQUEST,
            flags: 0,
        }
        .encode()
        .to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let e = read_frame(&mut &bytes[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
