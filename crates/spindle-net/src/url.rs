//! `net.urlEncode` and `net.urlDecode`: percent-encoding as Lune's functions do it. Every byte but
//! ASCII letters, digits and `-_.~` is encoded; decoding turns each `%XX` back into its byte and
//! leaves the rest (a `+` too) as it is.

use mlua::{Lua, LuaString};
use percent_encoding::{percent_decode, percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error_at_caller;

/// The bytes that stay as they are: RFC 3986's unreserved characters.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `net.urlEncode(text, binary?)`. Without `binary`, the text must be UTF-8, as in Lune.
pub(crate) fn encode(
    lua: &Lua,
    (text, binary): (LuaString, Option<bool>),
) -> mlua::Result<LuaString> {
    let bytes = text.as_bytes();
    if !binary.unwrap_or(false) && std::str::from_utf8(&bytes).is_err() {
        return Err(error_at_caller(
            lua,
            "net.urlEncode: the text is not valid UTF-8 (pass true as argument #2 for binary data)",
        ));
    }
    let encoded: String = percent_encode(&bytes, ENCODED).collect();
    lua.create_string(encoded)
}

/// `net.urlDecode(text, binary?)`. Without `binary`, the decoded bytes must be UTF-8, as in Lune.
pub(crate) fn decode(
    lua: &Lua,
    (text, binary): (LuaString, Option<bool>),
) -> mlua::Result<LuaString> {
    let decoded: Vec<u8> = percent_decode(&text.as_bytes()).collect();
    if !binary.unwrap_or(false) && std::str::from_utf8(&decoded).is_err() {
        return Err(error_at_caller(
            lua,
            "net.urlDecode: the decoded text is not valid UTF-8 (pass true as argument #2 for binary data)",
        ));
    }
    lua.create_string(decoded)
}
