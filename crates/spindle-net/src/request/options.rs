//! `net.request`'s argument: a URL, or a table of the request and its options, read and checked
//! before anything is sent. Every refusal names `net.request` and the argument or option, and
//! says what was wrong with it.

use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Uri};
use mlua::{Table, Value};

use crate::config::{describe, read_options, seconds_from, size_from, value_integer, UNREAD};
use crate::tls::{self, ExtraRoots};

/// A request, as `net.request` was asked for it.
pub(crate) struct Options {
    /// The absolute `http` or `https` URL, with the `query` option's pairs appended.
    pub(crate) url: Uri,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// For the whole exchange: connecting, every redirect, and reading the last body.
    pub(crate) timeout: Duration,
    /// Redirects followed before the request fails; `None` when they are not followed.
    pub(crate) max_redirects: Option<u32>,
    /// Bytes of response body accepted (after decompression).
    pub(crate) max_body_size: usize,
    /// Whether to ask for gzip or deflate and decode what comes so (Lune's `options.decompress`).
    pub(crate) decompress: bool,
    /// Roots trusted beside the webpki roots (`caCertificates`), checked but not yet parsed.
    pub(crate) ca_certificates: Option<ExtraRoots>,
}

/// The option names `net.request` knows, for the error that names an unknown one.
const KEYS: [&str; 11] = [
    "url",
    "method",
    "headers",
    "query",
    "body",
    "timeout",
    "followRedirects",
    "maxRedirects",
    "maxBodySize",
    "options",
    tls::OPTION,
];

/// The defaults: a request gives up after this long...
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// ...follows this many redirects...
const DEFAULT_MAX_REDIRECTS: u32 = 10;
/// ...and accepts a response body of this many bytes.
const DEFAULT_MAX_BODY_SIZE: usize = 64 * 1024 * 1024;

impl Options {
    /// Reads `net.request(url | config)`. The error is the message to raise at the caller.
    pub(crate) fn from_arg(arg: Value) -> Result<Options, String> {
        let fail = |message: String| format!("net.request: {message}");
        let table = match arg {
            Value::String(url) => return Ok(Options::defaults(url_from(&url.to_string_lossy())?)),
            Value::Table(table) => table,
            other => {
                return Err(fail(format!(
                    "invalid argument #1 (URL string or config table expected, got {})",
                    crate::type_name(&other)
                )))
            }
        };
        let url = match table
            .raw_get::<Value>("url")
            .map_err(|e| fail(e.to_string()))?
        {
            Value::String(url) => url_from(&url.to_string_lossy())?,
            Value::Nil => return Err(fail("the config table has no 'url'".into())),
            other => {
                return Err(fail(format!(
                    "option 'url' must be a string, got {}",
                    describe(&other)
                )))
            }
        };
        let mut options = Options::defaults(url);
        let mut follow = true;
        let mut query = None;
        read_options(Some(table), &KEYS, |name, value| {
            match name {
                "url" => {}
                "method" => options.method = method_from(value)?,
                "headers" => options.headers = headers_from(value)?,
                "query" => query = Some(query_from(value)?),
                "body" => {
                    options.body = match value {
                        Value::String(body) => Bytes::copy_from_slice(&body.as_bytes()),
                        Value::Buffer(body) => Bytes::from(body.to_vec()),
                        Value::Nil => Bytes::new(),
                        other => {
                            return Err(format!(
                                "must be a string or a buffer, got {}",
                                describe(other)
                            ))
                        }
                    }
                }
                "timeout" => options.timeout = seconds_from(value)?,
                "followRedirects" => match value {
                    Value::Boolean(on) => follow = *on,
                    other => return Err(format!("must be a boolean, got {}", describe(other))),
                },
                "maxRedirects" => options.max_redirects = Some(count_from(value)?),
                "maxBodySize" => options.max_body_size = size_from(value)?,
                tls::OPTION => options.ca_certificates = ExtraRoots::from_value(value)?,
                "options" => {
                    if let Some(decompress) = lune_options(value)? {
                        options.decompress = decompress;
                    }
                }
                _ => return Err(UNREAD.into()),
            }
            Ok(())
        })
        .map_err(fail)?;
        if !follow {
            options.max_redirects = None;
        }
        if let Some(query) = query.filter(|query| !query.is_empty()) {
            options.url = with_query(&options.url, &query)?;
        }
        Ok(options)
    }

    fn defaults(url: Uri) -> Options {
        Options {
            url,
            method: Method::GET,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: DEFAULT_TIMEOUT,
            max_redirects: Some(DEFAULT_MAX_REDIRECTS),
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            decompress: true,
            ca_certificates: None,
        }
    }
}

/// An absolute `http://` or `https://` URL.
pub(crate) fn url_from(text: &str) -> Result<Uri, String> {
    let invalid = |why: &str| format!("net.request: invalid URL \"{text}\" ({why})");
    let url: Uri = text.parse().map_err(|e| invalid(&format!("{e}")))?;
    match url.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(invalid(&format!("scheme '{other}' is not http or https"))),
        None => return Err(invalid("an absolute http:// or https:// URL expected")),
    }
    if let Some(port) = crate::url::bad_port(&url) {
        return Err(invalid(&format!("port {port} is not from 0 to 65535")));
    }
    match url.host() {
        Some(host) if !host.is_empty() => Ok(url),
        _ => Err(invalid("no host")),
    }
}

/// `url` with `query` (already encoded) appended to its own query.
fn with_query(url: &Uri, query: &str) -> Result<Uri, String> {
    let path = url.path();
    let path_and_query = match url.query() {
        Some(own) if !own.is_empty() => format!("{path}?{own}&{query}"),
        _ => format!("{path}?{query}"),
    };
    let mut parts = url.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|e| format!("net.request: option 'query' makes an invalid URL: {e}"))?,
    );
    Uri::from_parts(parts).map_err(|e| format!("net.request: option 'query': {e}"))
}

fn method_from(value: &Value) -> Result<Method, String> {
    let Value::String(name) = value else {
        return Err(format!(
            "must be a string such as \"POST\", got {}",
            describe(value)
        ));
    };
    let upper = name.to_string_lossy().to_ascii_uppercase();
    Method::from_bytes(upper.as_bytes())
        .map_err(|_| format!("is not an HTTP method: {}", describe(value)))
}

fn count_from(value: &Value) -> Result<u32, String> {
    match value_integer(value) {
        Some(n) if (0..=1000).contains(&n) => Ok(n as u32),
        _ => Err(format!(
            "must be an integer from 0 to 1000, got {}",
            describe(value)
        )),
    }
}

/// Lune's `options` table: `decompress`, the one option it has (and the only one accepted).
fn lune_options(value: &Value) -> Result<Option<bool>, String> {
    let table = match value {
        Value::Nil => return Ok(None),
        Value::Table(table) => table,
        other => return Err(format!("must be a table, got {}", describe(other))),
    };
    let mut decompress = None;
    for pair in table.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        let name = match &key {
            Value::String(name) => Some(name.to_string_lossy()),
            _ => None,
        };
        match (name.as_deref(), &value) {
            (Some("decompress"), Value::Boolean(on)) => decompress = Some(*on),
            (Some("decompress"), other) => {
                return Err(format!(
                    "has 'decompress' that must be a boolean, got {}",
                    describe(other)
                ))
            }
            _ => {
                return Err(format!(
                    "has an unknown key {} (known: decompress)",
                    describe(&key)
                ))
            }
        }
    }
    Ok(decompress)
}

/// `{ name = value | { values } }`: a string or number, or an array of them for a header sent
/// more than once.
fn headers_from(value: &Value) -> Result<HeaderMap, String> {
    let table = match value {
        Value::Table(table) => table,
        other => return Err(format!("must be a table, got {}", describe(other))),
    };
    let mut headers = HeaderMap::new();
    each_value(table, |name, value| {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("has an invalid header name \"{name}\""))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| format!("has an invalid value for header \"{name}\""))?;
        headers.append(header, value);
        Ok(())
    })?;
    Ok(headers)
}

/// `{ key = value | { values } }` as `key=value&...`, each key and value form-encoded; a key
/// with an array of values is sent once per value, in order.
fn query_from(value: &Value) -> Result<String, String> {
    let table = match value {
        Value::Table(table) => table,
        other => return Err(format!("must be a table, got {}", describe(other))),
    };
    let mut query = String::new();
    each_value(table, |key, value| {
        if !query.is_empty() {
            query.push('&');
        }
        query.extend(form_urlencoded::byte_serialize(key.as_bytes()));
        query.push('=');
        // The value's bytes as they are: a binary value is percent-encoded, not mangled.
        query.extend(form_urlencoded::byte_serialize(value));
        Ok(())
    })?;
    Ok(query)
}

/// Calls `add(key, value)` for each string key of `table` and each of its values: a string or
/// a number, or each element of an array of them.
fn each_value(
    table: &Table,
    mut add: impl FnMut(&str, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    for pair in table.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        let Value::String(key) = key else {
            return Err(format!(
                "has a key that is a {}, not a string",
                crate::type_name(&key)
            ));
        };
        let key = key.to_string_lossy();
        let mut one = |value: &Value| -> Result<(), String> {
            match value {
                Value::String(text) => add(&key, &text.as_bytes()),
                Value::Integer(_) | Value::Number(_) => add(&key, describe(value).as_bytes()),
                other => Err(format!(
                    "has \"{key}\" as {}, not a string or a number",
                    describe(other)
                )),
            }
        };
        match &value {
            Value::Table(values) => {
                for value in values.sequence_values::<Value>() {
                    one(&value.map_err(|e| e.to_string())?)?;
                }
            }
            single => one(single)?,
        }
    }
    Ok(())
}
