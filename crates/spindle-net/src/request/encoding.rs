//! Compressed response bodies: `gzip` and `deflate`, which `net.request` asks for (unless the
//! script sets its own `Accept-Encoding` or turns `decompress` off) and decodes. Decoding stops
//! one byte past the cap, so a small body that inflates without end (a "zip bomb") costs no more
//! memory than an honest one at the cap. Other codings (`br`, `zstd`) are returned as sent,
//! with their `Content-Encoding` header.

use std::io::Read;

use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use hyper::header::CONTENT_ENCODING;
use hyper::HeaderMap;

/// The `Accept-Encoding` sent when decompressing.
pub(super) const ACCEPTED: &str = "gzip, deflate";

/// A coding this module decodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Coding {
    Gzip,
    Deflate,
}

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub(super) fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

/// The response's coding, if it is one coding this module decodes.
pub(super) fn coding(headers: &HeaderMap) -> Option<Coding> {
    let mut values = headers.get_all(CONTENT_ENCODING).iter();
    let only = values.next()?;
    if values.next().is_some() {
        return None;
    }
    match only.to_str().ok()?.trim().to_ascii_lowercase().as_str() {
        "gzip" | "x-gzip" => Some(Coding::Gzip),
        "deflate" => Some(Coding::Deflate),
        _ => None,
    }
}

/// Why a body could not be decoded.
#[derive(Debug)]
pub(super) enum Undecodable {
    /// It decodes to more than the cap.
    TooLarge,
    /// It is not what its coding says.
    Corrupt(String),
}

/// `body` decoded, at most `cap` bytes of it.
pub(super) fn decode(coding: Coding, body: &[u8], cap: usize) -> Result<Vec<u8>, Undecodable> {
    match coding {
        Coding::Gzip => read_capped(MultiGzDecoder::new(body), cap),
        // HTTP's `deflate` is zlib's format, but some servers send a bare deflate stream.
        Coding::Deflate => read_capped(ZlibDecoder::new(body), cap)
            .or_else(|_| read_capped(DeflateDecoder::new(body), cap)),
    }
}

fn read_capped(decoder: impl Read, cap: usize) -> Result<Vec<u8>, Undecodable> {
    let mut decoded = Vec::new();
    decoder
        .take(cap as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| Undecodable::Corrupt(e.to_string()))?;
    if decoded.len() > cap {
        return Err(Undecodable::TooLarge);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;

    use super::*;

    #[test]
    fn gzip_zlib_and_bare_deflate_all_decode() {
        let text = b"hello hello hello hello";
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        gzip.write_all(text).unwrap();
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(text).unwrap();
        let mut bare = DeflateEncoder::new(Vec::new(), Compression::default());
        bare.write_all(text).unwrap();
        let gzip = gzip.finish().unwrap();
        assert_eq!(decode(Coding::Gzip, &gzip, 100).unwrap(), text);
        assert_eq!(
            decode(Coding::Deflate, &zlib.finish().unwrap(), 100).unwrap(),
            text
        );
        assert_eq!(
            decode(Coding::Deflate, &bare.finish().unwrap(), 100).unwrap(),
            text
        );
        assert!(matches!(
            decode(Coding::Gzip, &gzip, 10),
            Err(Undecodable::TooLarge)
        ));
        assert!(matches!(
            decode(Coding::Gzip, b"not gzip", 100),
            Err(Undecodable::Corrupt(_))
        ));
    }

    #[test]
    fn only_a_single_known_coding_is_decoded() {
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(CONTENT_ENCODING, value.parse().unwrap());
            }
            coding(&headers)
        };
        assert_eq!(with(&["GZIP"]), Some(Coding::Gzip));
        assert_eq!(with(&["deflate"]), Some(Coding::Deflate));
        assert_eq!(with(&["br"]), None);
        assert_eq!(with(&["gzip", "br"]), None);
        assert_eq!(with(&[]), None);
    }
}
