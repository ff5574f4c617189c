//! Header maps as scripts see them, for requests a server receives and responses a client
//! receives alike: a table of lower-case names to strings, where a header given more than once
//! is joined with `", "` in the order it came.

use hyper::header::HeaderValue;
use hyper::HeaderMap;
use mlua::{Lua, Table};

/// `headers` as a Lua table.
pub(crate) fn to_table(lua: &Lua, headers: &HeaderMap) -> mlua::Result<Table> {
    let table = lua.create_table_with_capacity(0, headers.keys_len())?;
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        let first = values.next().map(HeaderValue::as_bytes).unwrap_or_default();
        let mut joined = first.to_vec();
        for more in values {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(more.as_bytes());
        }
        table.raw_set(name.as_str(), lua.create_string(&joined)?)?;
    }
    Ok(table)
}
