//! `@spindle/stdio` as scripts use it: `format`, colors and styles, and refusals. What `write`
//! and `ewrite` put on the streams, in order with `print`, is pinned by the command line's tests
//! (crates/spindle-cli/tests/modules.rs), which read a child's output.

use mlua::Lua;

fn lua_with_stdio() -> Lua {
    let lua = Lua::new();
    lua.globals()
        .set("stdio", spindle_std::stdio::module(&lua).unwrap())
        .unwrap();
    lua
}

fn eval(lua: &Lua, code: &str) -> String {
    lua.load(code)
        .set_name("=test")
        .eval()
        .unwrap_or_else(|e| panic!("{code}: {e}"))
}

#[test]
fn format_shows_tables_by_their_contents() {
    let lua = lua_with_stdio();
    for (code, expected) in [
        ("stdio.format('plain', 1, true, nil)", "plain 1 true nil"),
        ("stdio.format({})", "{}"),
        ("stdio.format({1, 'two', {3}})", r#"{ 1, "two", { 3 } }"#),
        (
            "stdio.format({b = 1, a = 'x', [10] = true})",
            r#"{ [10] = true, a = "x", b = 1 }"#,
        ),
        (
            "stdio.format({['with space'] = 1})",
            r#"{ ["with space"] = 1 }"#,
        ),
        (
            "local t = {} t.self = t return stdio.format(t)",
            "{ self = <cycle> }",
        ),
        (
            "return stdio.format(setmetatable({}, {__tostring = function() return 'custom' end}))",
            "custom",
        ),
    ] {
        let code = if code.contains("return") {
            code.to_owned()
        } else {
            format!("return {code}")
        };
        assert_eq!(eval(&lua, &code), expected, "{code}");
    }
    let deep = eval(
        &lua,
        "local t = {} local top = t for i = 1, 20 do t.a = {} t = t.a end return stdio.format(top)",
    );
    assert!(deep.contains("{...}"), "{deep}");
    let long = eval(&lua, "return stdio.format(table.create(150, 0))");
    assert!(long.ends_with("... (50 more) }"), "{long}");
}

#[test]
fn colors_and_styles_are_escape_codes() {
    let lua = lua_with_stdio();
    assert_eq!(eval(&lua, "return stdio.color('red')"), "\x1b[31m");
    assert_eq!(eval(&lua, "return stdio.style('bold')"), "\x1b[1m");
    assert_eq!(eval(&lua, "return stdio.color('reset')"), "\x1b[0m");
    assert_eq!(
        eval(&lua, "return select(2, pcall(stdio.color, 'pink'))"),
        "invalid argument #1 to 'color' (one of black, blue, cyan, green, purple, red, reset, white, yellow expected, got pink)"
    );
}

#[test]
fn write_refuses_what_is_not_text_at_the_callers_line() {
    let lua = lua_with_stdio();
    assert_eq!(
        eval(
            &lua,
            "return select(2, pcall(function() stdio.write({}) end))"
        ),
        "test:1: stdio.write: string or buffer expected, got table"
    );
    assert_eq!(
        eval(
            &lua,
            "return select(2, pcall(function() stdio.ewrite(nil) end))"
        ),
        "test:1: stdio.ewrite: string or buffer expected, got nil"
    );
}

#[test]
fn a_script_that_replaces_globals_still_gets_refusals_and_formats() {
    // The module binds the globals and library functions it uses when it is made: replacing
    // them afterwards changes nothing (a replaced `error` that returns would make refusals
    // silent, a replaced `table.insert` would empty `format`).
    let lua = lua_with_stdio();
    assert_eq!(
        eval(
            &lua,
            r#"
            local pcall, select = pcall, select
            error = function() end
            tostring = function() return "?" end
            type = function() return "string" end
            table.insert = function() end
            string.format = function() return "" end
            return select(2, pcall(function()
                stdio.write({})
            end))
            "#
        ),
        "test:9: stdio.write: string or buffer expected, got table"
    );
    assert_eq!(
        eval(&lua, "return select(2, pcall(stdio.color, 5))"),
        "invalid argument #1 to 'color' (one of black, blue, cyan, green, purple, red, reset, white, yellow expected, got 5)"
    );
    assert_eq!(
        eval(&lua, "return stdio.format({1, 'two'}, 3)"),
        r#"{ 1, "two" } 3"#
    );
}
