//! `net.urlEncode` and `net.urlDecode`.

use mlua::Lua;
use spindle::Scheduler;

fn eval<T: mlua::FromLua>(code: &str) -> mlua::Result<T> {
    let lua = Lua::new();
    let scheduler = Scheduler::new(&lua).unwrap();
    lua.globals()
        .set("net", spindle_net::module(&scheduler).unwrap())
        .unwrap();
    lua.load(code).set_name("@main.luau").eval()
}

#[test]
fn url_encode_keeps_only_unreserved_characters() {
    let encoded: String = eval(r#"return net.urlEncode("a b&c=d/é-_.~")"#).unwrap();
    assert_eq!(encoded, "a%20b%26c%3Dd%2F%C3%A9-_.~");
}

#[test]
fn url_decode_reverses_url_encode_and_leaves_plus_alone() {
    let same: bool =
        eval(r#"local s = "x y/ü?&=+%" return net.urlDecode(net.urlEncode(s)) == s"#).unwrap();
    assert!(same);
    let plus: String = eval(r#"return net.urlDecode("a+b%21")"#).unwrap();
    assert_eq!(plus, "a+b!");
}

#[test]
fn binary_data_needs_the_binary_flag() {
    let refused = eval::<String>(r#"return net.urlDecode("%FF")"#)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("main.luau:1: net.urlDecode: the decoded text is not valid UTF-8"),
        "{refused}"
    );
    let bytes: bool = eval(r#"return net.urlDecode("%FF%00", true) == "\255\0""#).unwrap();
    assert!(bytes);
    let encoded: String = eval(r#"return net.urlEncode("\255", true)"#).unwrap();
    assert_eq!(encoded, "%FF");
}
