//! `@spindle/json`: JSON text to Lua values and back, on serde_json.
//!
//! Lua to JSON ([`encode`]):
//! - `nil` (at the top level) and [`json.null`](NULL) encode as `null`; booleans and strings as
//!   themselves (a string must be valid UTF-8); numbers as JSON numbers, integral ones without a
//!   fraction (`3`, not `3.0`). NaN and the infinities are refused: JSON has no text for them.
//! - A table whose keys are exactly `1..n` encodes as an array; one whose keys are all strings as
//!   an object, its keys sorted so that the text is the same on every run. A table with no
//!   entries encodes as `[]`, as Roblox's `JSONEncode` does, unless `json.object` marked it.
//!   Any other key (a number outside `1..n`, a boolean, a table) is refused.
//! - Functions, threads, userdata, buffers and vectors are refused.
//!
//! Refusals name what was refused and where, as a path from the value given (`$.users[2].name`),
//! and so do a table met again inside itself (a cycle) and nesting deeper than [`MAX_DEPTH`].
//! The text is capped by what the VM could still hold (its memory limit, and Luau's 1 GiB
//! string limit), so a table that refers to another many times over cannot make an endless
//! text.
//!
//! JSON to Lua ([`decode`]): objects and arrays become tables, `null` becomes `nil` (an array's
//! `null` leaves a hole; a key whose value is `null` is absent), numbers become Lua numbers
//! (doubles). An empty object (or one whose members are all `null`) becomes a table marked as
//! `json.object` marks one, so that it encodes back as `{}`. Errors name the line and column. Nesting deeper than [`MAX_DEPTH`] is
//! refused, and every value is made in the VM as it is read, so a memory limit bounds what a
//! text can make.
//!
//! Invariant: no Lua handle is kept per element: an array or object of a million entries holds a
//! few handles at a time, not a million (mlua's reference stack holds about a million).

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::fmt::{self, Write as _};
use std::io;

use mlua::{Lua, Table, Value};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq};

/// How deep arrays and objects may nest, in both directions (below serde_json's own limit for
/// reading, 128, so that this one is met first).
pub const MAX_DEPTH: usize = 100;

/// The longest string Luau makes (`MAXSSIZE`, 1 GiB).
const MAX_STRING: usize = 1 << 30;

/// The Lua side of `@spindle/json`: argument checks and errors raised at the caller's line.
const JSON_LUAU: &str = include_str!("json.luau");

/// The key of the metatable that marks tables as objects, in the VM's registry.
const OBJECT_MARK: &str = "spindle_std.json.object";

/// `json.null`: a light userdata holding a null pointer (the value mlua calls `Value::NULL`).
pub const NULL: Value = Value::NULL;

/// Builds the `@spindle/json` module: `encode(value, pretty?)`, `decode(text)`, `null` and
/// `object(t?)`.
///
/// ```
/// let lua = mlua::Lua::new();
/// let json = spindle_std::json::module(&lua)?;
/// lua.globals().set("json", json)?;
/// let text: String = lua.load(r#"json.encode({ name = "spindle", tags = { "a", "b" } })"#).eval()?;
/// assert_eq!(text, r#"{"name":"spindle","tags":["a","b"]}"#);
/// # Ok::<(), mlua::Error>(())
/// ```
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let mark = object_mark(lua)?;
    let encode = lua.create_function(|lua, (value, pretty): (Value, bool)| {
        let options = EncodeOptions { pretty };
        match encode(lua, &value, options) {
            Ok(text) => Ok((true, Value::String(lua.create_string(text)?))),
            Err(EncodeError::Memory) => Err(mlua::Error::MemoryError(
                "not enough memory for the encoded text".into(),
            )),
            Err(EncodeError::Lua(error)) => Err(error),
            Err(refusal) => Ok((
                false,
                Value::String(lua.create_string(refusal.to_string())?),
            )),
        }
    })?;
    let decode =
        lua.create_function(
            |lua, text: mlua::LuaString| match decode(lua, &text.as_bytes()) {
                Ok(value) => Ok((true, value)),
                Err(DecodeError::Lua(error)) => Err(error),
                Err(refusal) => Ok((
                    false,
                    Value::String(lua.create_string(refusal.to_string())?),
                )),
            },
        )?;
    let build = lua
        .load(JSON_LUAU)
        .set_name("=[spindle json]")
        .into_function()?;
    build.call((encode, decode, mark, NULL))
}

/// How [`encode`] writes its text.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncodeOptions {
    /// Indented over several lines (two spaces a level) instead of on one line.
    pub pretty: bool,
}

/// Why a value could not be encoded.
#[derive(Debug)]
#[non_exhaustive]
pub enum EncodeError {
    /// A value JSON cannot hold, at a path from the value given (`$` itself, `$.a[2]`).
    Refused {
        /// What was refused, e.g. "a function" or "NaN".
        what: String,
        /// Where, as `$.key[index]`.
        path: String,
    },
    /// A table met again inside itself.
    Cycle {
        /// Where it was met again.
        path: String,
        /// Where it was entered first.
        first: String,
    },
    /// Tables nested deeper than [`MAX_DEPTH`].
    TooDeep {
        /// The table at which the limit was reached.
        path: String,
    },
    /// The text would need more memory than the VM may still use.
    Memory,
    /// The VM failed while the value was read (out of memory, for example).
    Lua(mlua::Error),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { what, path } => write!(f, "json.encode: {what} at {path}"),
            Self::Cycle { path, first } => write!(
                f,
                "json.encode: cycle: the table at {first} is inside itself, at {path}"
            ),
            Self::TooDeep { path } => write!(
                f,
                "json.encode: tables nested deeper than {MAX_DEPTH} levels, at {path}"
            ),
            Self::Memory => write!(f, "json.encode: not enough memory for the encoded text"),
            Self::Lua(error) => write!(f, "json.encode: {error}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Encodes `value` as JSON text (module doc: what becomes what).
pub fn encode(lua: &Lua, value: &Value, options: EncodeOptions) -> Result<String, EncodeError> {
    let encoder = Encoder {
        object_mark: object_mark(lua).map_err(EncodeError::Lua)?,
        path: RefCell::new(Vec::new()),
        open: RefCell::new(Vec::new()),
        failure: RefCell::new(None),
    };
    let mut out = Capped {
        text: Vec::new(),
        cap: headroom(lua).min(MAX_STRING),
        over: Cell::new(false),
    };
    let node = Node {
        encoder: &encoder,
        value,
    };
    let written = if options.pretty {
        node.serialize(&mut serde_json::Serializer::pretty(&mut out))
    } else {
        node.serialize(&mut serde_json::Serializer::new(&mut out))
    };
    match written {
        Ok(()) => Ok(String::from_utf8(out.text).expect("serde_json writes UTF-8")),
        Err(_) if out.over.get() => Err(EncodeError::Memory),
        Err(error) => Err(encoder
            .failure
            .into_inner()
            .unwrap_or_else(|| EncodeError::Lua(mlua::Error::external(error)))),
    }
}

/// The bytes the VM may still allocate under its memory limit (unlimited: `usize::MAX`).
/// mlua reads the limit only by setting it, so it is set back at once.
fn headroom(lua: &Lua) -> usize {
    match lua.set_memory_limit(0) {
        Ok(0) => usize::MAX,
        Ok(limit) => {
            let _ = lua.set_memory_limit(limit);
            limit.saturating_sub(lua.used_memory())
        }
        Err(_) => usize::MAX,
    }
}

/// The encoded text so far, refusing to grow past `cap`.
struct Capped {
    text: Vec<u8>,
    cap: usize,
    over: Cell<bool>,
}

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.text.len() + buf.len() > self.cap {
            self.over.set(true);
            return Err(io::Error::other("over the cap"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A step of the path from the encoded value to the one being written.
enum Step {
    Index(usize),
    Key(String),
}

/// What one [`encode`] call keeps while it walks the value.
struct Encoder {
    object_mark: Table,
    /// The path to the value being written.
    path: RefCell<Vec<Step>>,
    /// The tables being written, outermost first, with the length of `path` at each.
    open: RefCell<Vec<(*const c_void, usize)>>,
    /// The first refusal; serde's error only carries it out.
    failure: RefCell<Option<EncodeError>>,
}

impl Encoder {
    fn path_text(&self, len: usize) -> String {
        let mut text = String::from("$");
        for step in &self.path.borrow()[..len] {
            match step {
                Step::Index(i) => {
                    let _ = write!(text, "[{i}]");
                }
                Step::Key(key) if is_name(key) => {
                    let _ = write!(text, ".{key}");
                }
                Step::Key(key) => {
                    let _ = write!(text, "[{key:?}]");
                }
            }
        }
        text
    }

    fn here(&self) -> String {
        self.path_text(self.path.borrow().len())
    }

    fn fail<E: ser::Error>(&self, failure: EncodeError) -> E {
        let message = failure.to_string();
        self.failure.borrow_mut().get_or_insert(failure);
        E::custom(message)
    }

    fn refuse<E: ser::Error>(&self, what: impl Into<String>) -> E {
        self.fail(EncodeError::Refused {
            what: what.into(),
            path: self.here(),
        })
    }

    fn lua_error<E: ser::Error>(&self, error: mlua::Error) -> E {
        self.fail(EncodeError::Lua(error))
    }

    /// Writes `value` one step below the current path.
    fn child<S: SerializeSeq>(
        &self,
        seq: &mut S,
        step: Step,
        value: &Value,
    ) -> Result<(), S::Error> {
        self.path.borrow_mut().push(step);
        let written = seq.serialize_element(&Node {
            encoder: self,
            value,
        });
        self.path.borrow_mut().pop();
        written
    }
}

fn is_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One value to write, with the walk's state.
struct Node<'e> {
    encoder: &'e Encoder,
    value: &'e Value,
}

impl Serialize for Node<'_> {
    fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let encoder = self.encoder;
        match self.value {
            Value::Nil => serializer.serialize_unit(),
            Value::LightUserData(pointer) if pointer.0.is_null() => serializer.serialize_unit(),
            Value::Boolean(b) => serializer.serialize_bool(*b),
            Value::Integer(i) => serializer.serialize_i64(*i),
            Value::Number(n) if n.is_nan() => Err(encoder.refuse("NaN (JSON has no NaN)")),
            Value::Number(n) if n.is_infinite() => {
                Err(encoder.refuse(format!("{n} (JSON has no infinity)")))
            }
            // Integral numbers as integers: `3`, not `3.0`. Every such double below 2^63 in
            // magnitude converts to i64 exactly.
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.2e18 => {
                serializer.serialize_i64(*n as i64)
            }
            Value::Number(n) => serializer.serialize_f64(*n),
            Value::String(s) => match s.to_str() {
                Ok(text) => serializer.serialize_str(&text),
                Err(_) => Err(encoder.refuse("a string that is not valid UTF-8")),
            },
            Value::Table(table) => self.table(table, serializer),
            other => {
                Err(encoder.refuse(format!("a {} (JSON has no such value)", other.type_name())))
            }
        }
    }
}

/// The shape a table encodes as.
enum Shape {
    Array(usize),
    Object(Vec<String>),
}

impl Node<'_> {
    fn table<S: ser::Serializer>(&self, table: &Table, serializer: S) -> Result<S::Ok, S::Error> {
        let encoder = self.encoder;
        let pointer = table.to_pointer();
        let here = encoder.path.borrow().len();
        let first = encoder
            .open
            .borrow()
            .iter()
            .find(|(open, _)| *open == pointer)
            .map(|&(_, at)| at);
        if let Some(first) = first {
            return Err(encoder.fail(EncodeError::Cycle {
                path: encoder.here(),
                first: encoder.path_text(first),
            }));
        }
        if encoder.open.borrow().len() >= MAX_DEPTH {
            return Err(encoder.fail(EncodeError::TooDeep {
                path: encoder.here(),
            }));
        }
        let shape = self.shape(table)?;
        encoder.open.borrow_mut().push((pointer, here));
        let written = self.write_table(table, shape, serializer);
        encoder.open.borrow_mut().pop();
        written
    }

    fn shape<E: ser::Error>(&self, table: &Table) -> Result<Shape, E> {
        let encoder = self.encoder;
        let len = table.raw_len();
        let (mut count, mut keys, mut numeric) = (0usize, Vec::new(), false);
        for pair in table.pairs::<Value, Value>() {
            let (key, _) = pair.map_err(|e| encoder.lua_error(e))?;
            count += 1;
            match key {
                Value::String(key) => match key.to_str() {
                    Ok(key) => keys.push(key.to_owned()),
                    Err(_) => return Err(encoder.refuse("a key that is not valid UTF-8")),
                },
                Value::Integer(i) if i >= 1 && (i as usize) <= len => numeric = true,
                Value::Number(n) if n.fract() == 0.0 && n >= 1.0 && n <= len as f64 => {
                    numeric = true
                }
                Value::Integer(_) | Value::Number(_) => {
                    return Err(encoder.refuse(format!(
                        "a table with the key {} (an array's keys are 1 to n, an object's strings)",
                        display_key(&key)
                    )))
                }
                other => {
                    return Err(encoder.refuse(format!(
                        "a table with a {} key (an object's keys are strings)",
                        other.type_name()
                    )))
                }
            }
        }
        if numeric && !keys.is_empty() {
            return Err(encoder
                .refuse("a table with both array items and string keys (JSON has no such value)"));
        }
        if numeric && count != len {
            return Err(encoder.refuse("an array with holes (its keys are not 1 to n)"));
        }
        if count == 0 && table.metatable().as_ref() == Some(&encoder.object_mark) {
            return Ok(Shape::Object(keys));
        }
        if keys.is_empty() {
            return Ok(Shape::Array(len.min(count)));
        }
        keys.sort_unstable();
        Ok(Shape::Object(keys))
    }

    fn write_table<S: ser::Serializer>(
        &self,
        table: &Table,
        shape: Shape,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let encoder = self.encoder;
        match shape {
            Shape::Array(len) => {
                let mut seq = serializer.serialize_seq(Some(len))?;
                for i in 1..=len {
                    let item: Value = table.raw_get(i).map_err(|e| encoder.lua_error(e))?;
                    encoder.child(&mut seq, Step::Index(i), &item)?;
                }
                seq.end()
            }
            Shape::Object(keys) => {
                let mut map = serializer.serialize_map(Some(keys.len()))?;
                for key in keys {
                    let item: Value = table
                        .raw_get(key.as_str())
                        .map_err(|e| encoder.lua_error(e))?;
                    map.serialize_key(&key)?;
                    encoder.path.borrow_mut().push(Step::Key(key));
                    let written = map.serialize_value(&Node {
                        encoder,
                        value: &item,
                    });
                    encoder.path.borrow_mut().pop();
                    written?;
                }
                map.end()
            }
        }
    }
}

fn display_key(key: &Value) -> String {
    match key {
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.type_name().to_owned(),
    }
}

/// The metatable `json.object` puts on tables, made once per VM and kept in its registry.
fn object_mark(lua: &Lua) -> mlua::Result<Table> {
    if let Ok(mark) = lua.named_registry_value::<Table>(OBJECT_MARK) {
        return Ok(mark);
    }
    let mark = lua.create_table()?;
    mark.raw_set("__metatable", "json.object")?;
    mark.set_readonly(true);
    lua.set_named_registry_value(OBJECT_MARK, &mark)?;
    Ok(mark)
}

/// Why a text could not be decoded.
#[derive(Debug)]
#[non_exhaustive]
pub enum DecodeError {
    /// The text is not JSON, or nests too deep: serde_json's message, with line and column.
    Syntax(serde_json::Error),
    /// The VM failed while the values were made (out of memory, for example).
    Lua(mlua::Error),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(error) => write!(f, "json.decode: {error}"),
            Self::Lua(error) => write!(f, "json.decode: {error}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes JSON text into a Lua value (module doc: what becomes what).
pub fn decode(lua: &Lua, text: &[u8]) -> Result<Value, DecodeError> {
    let state = DecodeState {
        lua,
        object_mark: object_mark(lua).map_err(DecodeError::Lua)?,
        failure: RefCell::new(None),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value = Seed(&state, 0)
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match value {
        Ok(value) => Ok(value),
        Err(error) => match state.failure.into_inner() {
            Some(failure) => Err(DecodeError::Lua(failure)),
            None => Err(DecodeError::Syntax(error)),
        },
    }
}

struct DecodeState<'l> {
    lua: &'l Lua,
    object_mark: Table,
    /// The VM's error, if making a value failed; serde's error only carries it out.
    failure: RefCell<Option<mlua::Error>>,
}

impl DecodeState<'_> {
    fn fail<E: de::Error>(&self, error: mlua::Error) -> E {
        let message = error.to_string();
        self.failure.borrow_mut().get_or_insert(error);
        E::custom(message)
    }
}

/// Makes the Lua value of one JSON value, nested in this many arrays and objects.
#[derive(Clone, Copy)]
struct Seed<'s, 'l>(&'s DecodeState<'l>, usize);

impl Seed<'_, '_> {
    /// The seed of the values inside an array or object.
    fn inner<E: de::Error>(self) -> Result<Self, E> {
        if self.1 >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "arrays and objects nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Seed(self.0, self.1 + 1))
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Boolean(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n as f64))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n as f64))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Number(n))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.0
            .lua
            .create_string(s)
            .map(Value::String)
            .map_err(|e| self.0.fail(e))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.inner()?;
        let table = self.0.lua.create_table().map_err(|e| self.0.fail(e))?;
        let mut index = 0usize;
        while let Some(item) = seq.next_element_seed(inner)? {
            index += 1;
            table.raw_set(index, item).map_err(|e| self.0.fail(e))?;
        }
        Ok(Value::Table(table))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.inner()?;
        let table = self.0.lua.create_table().map_err(|e| self.0.fail(e))?;
        // An object whose members were all `null` is an empty table too.
        let mut empty = true;
        while let Some(key) = map.next_key_seed(inner)? {
            let value = map.next_value_seed(inner)?;
            empty &= value.is_nil();
            table.raw_set(key, value).map_err(|e| self.0.fail(e))?;
        }
        if empty {
            table
                .set_metatable(Some(self.0.object_mark.clone()))
                .map_err(|e| self.0.fail(e))?;
        }
        Ok(Value::Table(table))
    }
}
