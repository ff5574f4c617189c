//! `@spindle/json` as scripts use it: round trips, the shapes tables take, and every refusal
//! naming what it refused and where.

use mlua::{Lua, Value};

fn lua_with_json() -> Lua {
    let lua = Lua::new();
    lua.globals()
        .set("json", spindle_std::json::module(&lua).unwrap())
        .unwrap();
    lua
}

fn eval<T: mlua::FromLuaMulti>(lua: &Lua, code: &str) -> T {
    lua.load(code)
        .set_name("=test")
        .eval()
        .unwrap_or_else(|e| panic!("{code}: {e}"))
}

/// The message a failing chunk raises, which must be a plain string.
fn error_of(lua: &Lua, code: &str) -> String {
    let (ok, message): (bool, Value) = eval(lua, &format!("return pcall(function() {code} end)"));
    assert!(!ok, "{code} should fail");
    match message {
        Value::String(s) => s.to_str().unwrap().to_owned(),
        other => panic!("{code}: the error is a {}, not a string", other.type_name()),
    }
}

#[test]
fn values_encode_as_their_json_counterparts() {
    let lua = lua_with_json();
    for (code, expected) in [
        ("nil", "null"),
        ("json.null", "null"),
        ("true", "true"),
        ("3", "3"),
        ("-0.5", "-0.5"),
        ("1e300", "1e+300"),
        ("2^53", "9007199254740992"),
        ("'a\"b\\n'", r#""a\"b\n""#),
        ("{1, 2, 'x'}", r#"[1,2,"x"]"#),
        ("{b = 1, a = {true, false}}", r#"{"a":[true,false],"b":1}"#),
        ("{}", "[]"),
        ("json.object()", "{}"),
        ("json.object({x = 1})", r#"{"x":1}"#),
        ("{[1] = 'a', [2] = 'b'}", r#"["a","b"]"#),
        ("{['with space'] = 1}", r#"{"with space":1}"#),
        ("{1, json.null, 3}", "[1,null,3]"),
    ] {
        let text: String = eval(&lua, &format!("return json.encode({code})"));
        assert_eq!(text, expected, "{code}");
    }
}

#[test]
fn pretty_encoding_indents_by_two_spaces() {
    let lua = lua_with_json();
    let text: String = eval(&lua, "return json.encode({a = {1, 2}}, true)");
    assert_eq!(text, "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
}

#[test]
fn json_decodes_to_tables_and_round_trips() {
    let lua = lua_with_json();
    let ok: bool = eval(
        &lua,
        r#"
        local v = json.decode('{"name": "x", "list": [1, 2.5, "three", true, false], "nested": {"deep": {}}}')
        assert(v.name == "x")
        assert(#v.list == 5 and v.list[2] == 2.5 and v.list[3] == "three" and v.list[5] == false)
        assert(next(v.nested.deep) == nil)
        -- An empty object stays an object, an empty array an array.
        assert(json.encode(json.decode('{"a": {}, "b": []}')) == '{"a":{},"b":[]}')
        local text = '{"a":[1,2,{"b":null}],"c":"d"}'
        assert(json.encode(json.decode(text)) == '{"a":[1,2,{}],"c":"d"}', json.encode(json.decode(text)))
        return true
    "#,
    );
    assert!(ok);
}

#[test]
fn null_decodes_to_nil_leaving_holes_in_arrays() {
    let lua = lua_with_json();
    let (n1, n2, n3, missing): (f64, Value, f64, Value) = eval(
        &lua,
        r#"local v = json.decode('{"list": [1, null, 3], "gone": null}')
           return v.list[1], v.list[2], v.list[3], v.gone"#,
    );
    assert_eq!((n1, n3), (1.0, 3.0));
    assert!(n2.is_nil() && missing.is_nil());
    let top: Value = eval(&lua, "return json.decode('null')");
    assert!(top.is_nil());
}

#[test]
fn decode_errors_name_line_and_column_at_the_callers_line() {
    let lua = lua_with_json();
    assert_eq!(
        error_of(&lua, "json.decode('{\\n  \"a\": 1,\\n}')"),
        "test:1: json.decode: trailing comma at line 3 column 1"
    );
    assert_eq!(
        error_of(&lua, "json.decode('[1, 2')"),
        "test:1: json.decode: EOF while parsing a list at line 1 column 5"
    );
    assert_eq!(
        error_of(&lua, "json.decode('[1] x')"),
        "test:1: json.decode: trailing characters at line 1 column 5"
    );
    assert_eq!(
        error_of(&lua, "json.decode(42)"),
        "test:1: invalid argument #1 to 'decode' (string expected, got number)"
    );
}

#[test]
fn deep_nesting_is_refused_in_both_directions_without_a_crash() {
    let lua = lua_with_json();
    let message = error_of(&lua, "json.decode(string.rep('[', 100000))");
    assert_eq!(
        message,
        "test:1: json.decode: arrays and objects nested deeper than 100 levels at line 1 column 101"
    );
    let message = error_of(
        &lua,
        "local t = {} local top = t for i = 1, 100000 do t.a = {} t = t.a end json.encode(top)",
    );
    assert!(
        message
            .starts_with("test:1: json.encode: tables nested deeper than 100 levels, at $.a.a.a"),
        "{message}"
    );
    // 100 levels are fine both ways.
    let ok: bool = eval(
        &lua,
        "local s = string.rep('[', 100) .. string.rep(']', 100) return json.encode(json.decode(s)) == s",
    );
    assert!(ok);
}

#[test]
fn refusals_name_the_value_and_its_path() {
    let lua = lua_with_json();
    for (code, expected) in [
        ("json.encode(0/0)", "json.encode: NaN (JSON has no NaN) at $"),
        ("json.encode({x = {1, math.huge}})", "json.encode: inf (JSON has no infinity) at $.x[2]"),
        ("json.encode({f = print})", "json.encode: a function (JSON has no such value) at $.f"),
        (
            "json.encode({['a b'] = {coroutine.create(print)}})",
            r#"json.encode: a thread (JSON has no such value) at $["a b"][1]"#,
        ),
        (
            "json.encode({[true] = 1})",
            "json.encode: a table with a boolean key (an object's keys are strings) at $",
        ),
        (
            "json.encode({a = {[0] = 1}})",
            "json.encode: a table with the key 0 (an array's keys are 1 to n, an object's strings) at $.a",
        ),
        (
            "json.encode({1, 2, x = 3})",
            "json.encode: a table with both array items and string keys (JSON has no such value) at $",
        ),
        (
            "json.encode({[1] = 1, [3] = 3})",
            "json.encode: a table with the key 3 (an array's keys are 1 to n, an object's strings) at $",
        ),
        (
            "json.encode({s = '\\255'})",
            "json.encode: a string that is not valid UTF-8 at $.s",
        ),
        (
            "json.encode({}, 'yes')",
            "invalid argument #2 to 'encode' (boolean expected, got string)",
        ),
    ] {
        assert_eq!(error_of(&lua, code), format!("test:1: {expected}"), "{code}");
    }
}

#[test]
fn cycles_are_refused_naming_where_the_table_was_entered() {
    let lua = lua_with_json();
    assert_eq!(
        error_of(
            &lua,
            "local t = {a = {b = {}}} t.a.b.c = t.a json.encode(t)"
        ),
        "test:1: json.encode: cycle: the table at $.a is inside itself, at $.a.b.c"
    );
    // The same table twice, side by side, is no cycle.
    let text: String = eval(&lua, "local s = {1} return json.encode({s, s})");
    assert_eq!(text, "[[1],[1]]");
}

#[test]
fn a_table_shared_exponentially_is_stopped_by_the_memory_limit() {
    let lua = lua_with_json();
    lua.set_memory_limit(lua.used_memory() + (1 << 20)).unwrap();
    // 2^40 leaves: the text would be terabytes.
    let message = lua
        .load("local t = {} for i = 1, 40 do t = {t, t} end return json.encode(t)")
        .exec()
        .unwrap_err()
        .to_string();
    assert!(message.contains("not enough memory"), "{message}");
}

#[test]
fn huge_strings_under_a_memory_limit_fail_with_a_memory_error() {
    let lua = lua_with_json();
    lua.set_memory_limit(lua.used_memory() + (64 << 20))
        .unwrap();
    // A 20 MB string fits; its text (20 MB more, plus quotes) does too, but the decoded copy
    // of a 40 MB text of it does not.
    let ok: bool = eval(
        &lua,
        "local s = string.rep('x', 20e6) local text = json.encode(s) return #text == 20e6 + 2",
    );
    assert!(ok);
    let message = lua
        .load("local s = string.rep('\\\\u0041', 5e6) local text = '[\"' .. s .. '\"' .. ',\"' .. s .. '\"]' json.decode(text)")
        .exec()
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string());
    // Either the decode fits or it fails as running out of memory does, never otherwise.
    assert!(
        message.is_empty() || message.contains("not enough memory"),
        "{message}"
    );
    // Still usable afterwards.
    lua.set_memory_limit(0).unwrap();
    let text: String = eval(&lua, "return json.encode({1})");
    assert_eq!(text, "[1]");
}

#[test]
fn a_million_items_encode_and_decode_without_exhausting_handles() {
    let lua = lua_with_json();
    let ok: bool = eval(
        &lua,
        r#"
        local t = table.create(1000000, 7)
        local text = json.encode(t)
        local back = json.decode(text)
        return #back == 1000000 and back[1000000] == 7
    "#,
    );
    assert!(ok);
}

#[test]
fn rust_hosts_encode_and_decode_directly() {
    let lua = Lua::new();
    let value = spindle_std::json::decode(&lua, br#"{"a": [1, 2]}"#).unwrap();
    let text = spindle_std::json::encode(&lua, &value, Default::default()).unwrap();
    assert_eq!(text, r#"{"a":[1,2]}"#);
    let error = spindle_std::json::decode(&lua, b"{").unwrap_err();
    assert_eq!(
        error.to_string(),
        "json.decode: EOF while parsing an object at line 1 column 1"
    );
}

#[test]
fn a_script_that_replaces_error_and_type_still_gets_argument_errors_at_its_line() {
    // The module binds the globals it uses when it is made: replacing them afterwards changes
    // nothing in its checks (a replaced `error` that returns would make refusals silent).
    let lua = lua_with_json();
    let (ok, message, nested): (bool, String, String) = eval(
        &lua,
        r#"
        local pcall, select = pcall, select
        error = function() end
        type = function() return "string" end
        typeof = function() return "string" end
        setmetatable = function(t) return t end
        local ok, message = pcall(function()
            return json.decode(5)
        end)
        local nested = select(2, pcall(function() return json.decode("[1,") end))
        return ok, message, nested
        "#,
    );
    assert!(!ok);
    assert_eq!(
        message,
        "test:8: invalid argument #1 to 'decode' (string expected, got number)"
    );
    assert!(nested.starts_with("test:10: "), "{nested}");
    assert_eq!(
        error_of(&lua, "json.object(5)"),
        "test:1: invalid argument #1 to 'object' (table expected, got number)"
    );
}
