//! Header maps as scripts see them, for requests a server receives and responses a client
//! receives alike: a table of lower-case names to strings, where a header given more than once
//! is joined with `", "` in the order it came.

use std::borrow::Cow;

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use mlua::{Lua, Table};

/// `headers` as a Lua table.
pub(crate) fn to_table(lua: &Lua, headers: &HeaderMap) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(0, headers.keys_len())?;
    for name in headers.keys() {
        table.raw_set(name.as_str(), lua.create_string(&*joined(headers, name))?)?;
    }
    Ok(table)
}

/// The value of header `name`: its values joined with `", "`, borrowed when there is one.
pub(crate) fn joined<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Cow<'a, [u8]> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().map(HeaderValue::as_bytes).unwrap_or_default();
    let Some(second) = values.next() else {
        return Cow::Borrowed(first);
    };
    let mut joined = first.to_vec();
    for more in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(more.as_bytes());
    }
    Cow::Owned(joined)
}
