//! Error values that are tables or userdata, reported by their contents.
//!
//! A task that fails with `error({ code = 7 })` reaches the error handler as the text Luau's
//! `tostring` gives the value, `table: 0x...`: the scheduler turns an error value into its
//! report's text where the task fails, through `__tostring` where the value has one. To show
//! the contents instead, the command's `error` function (a wrapper around Luau's, in
//! [`ERROR_LUAU`]) remembers the last few tables and userdata it raised by that text; the
//! error handler looks a report's text up ([`Remembered::describe`]) and prints the value as
//! `stdio.format` shows it (`{ code = 7 }`). A value whose `__tostring` fails is remembered by
//! the failure's text, which is what the report says then, and printed as its contents and
//! the failure.
//!
//! The wrapper raises the very value it was given (a `pcall` gets the table back), and a
//! string at the level asked for, as Luau's `error` does; its own traceback level is one of
//! Spindle's, which reports leave out. Values raised by other means (a Rust function's error)
//! keep their `tostring` text.
//!
//! Invariant: the remembered values are at most [`ERROR_LUAU`]'s `KEEP`, strongly held (an
//! error's value may be collected between the failure and the report), and describing one
//! runs Lua that cannot raise past the handler: any failure gives back the report's own text.

use spindle::mlua::{self, Function, Lua, Table};

/// The `error` wrapper, and the lookup of a report's text (the chunk's name makes its
/// traceback levels Spindle's own, left out of reports).
const ERROR_LUAU: &str = r#"
local rawerror, format = ...
-- Bound now: a script that replaces these globals does not change what `error` does.
local type, typeof, tostring, pcall, next = type, typeof, tostring, pcall, next
local insert, remove, match = table.insert, table.remove, string.match
-- Values raised lately, by the text a report of them would carry.
local recent = {}
local order = {}
local KEEP = 16
-- True while `error` turns a value into text: a `__tostring` that raises its value again (or is
-- `error` itself) calls `error` from inside that, which then only raises. Without it each level
-- would turn the value into text twice over, and the calls would double at every level of
-- Luau's 200 nested C calls: a hang. (A `__tostring` cannot yield, so no other task runs
-- while this is set.)
local describing = false

local function remember(text, value)
	if recent[text] == nil then
		insert(order, text)
		if #order > KEEP then
			recent[remove(order, 1)] = nil
		end
	end
	recent[text] = value
end

local function error(message, level)
	local kind = type(message)
	if kind == "table" or kind == "userdata" then
		if not describing then
			describing = true
			local ok, text = pcall(tostring, message)
			describing = false
			if not ok then
				-- The failure is only remembered by a text of its own.
				if type(text) == "string" then
					remember(text, { value = message, failure = text })
				end
			elseif match(text, "^%a+: 0x%x+$") then
				remember(text, { value = message })
			end
		end
		rawerror(message)
	end
	if type(level) == "number" and level >= 1 then
		level += 1
	elseif level == nil then
		level = 2
	end
	rawerror(message, level)
end

local function describe(text)
	local found = recent[text]
	if found == nil then
		return nil
	end
	local value = found.value
	if found.failure ~= nil then
		-- Shown without its metatable, whose __tostring would fail again.
		local contents = typeof(value)
		if type(value) == "table" then
			local copy = {}
			for key, item in next, value do
				copy[key] = item
			end
			local ok, shown = pcall(format, copy)
			if ok then
				contents = shown
			end
		end
		return `{contents} (its __tostring failed: {found.failure})`
	end
	local ok, shown = pcall(format, value)
	return if ok then shown else nil
end

return error, describe
"#;

/// The lookup of remembered error values, for the error handler.
#[derive(Clone)]
pub struct Remembered(Function);

/// Replaces `lua`'s global `error` with the remembering wrapper.
pub fn install(lua: &Lua) -> mlua::Result<Remembered> {
    let globals = lua.globals();
    let rawerror: Function = globals.get("error")?;
    let stdio: Table = spindle_std::stdio::module(lua)?;
    let format: Function = stdio.get("format")?;
    let (error, describe): (Function, Function) = lua
        .load(ERROR_LUAU)
        .set_name("=[spindle error]")
        .call((rawerror, format))?;
    globals.set("error", error)?;
    Ok(Remembered(describe))
}

impl Remembered {
    /// The contents of the error value a report's `message` stands for, when `error` raised
    /// one that `tostring` shows by its address or whose `__tostring` failed.
    pub fn describe(&self, message: &str) -> Option<String> {
        self.0
            .call::<Option<String>>(address_text(message).as_deref().unwrap_or(message))
            .ok()
            .flatten()
    }
}

/// `table: 0x55aef3d90240`, as mlua words an error value it cannot show, in the words of
/// Luau's `tostring` (`table: 0x000055aef3d90240`); `None` for other texts.
fn address_text(message: &str) -> Option<String> {
    let (kind, hex) = message.split_once(": 0x")?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let address = u64::from_str_radix(hex, 16).ok()?;
    Some(format!("{kind}: 0x{address:016x}"))
}

/// A task's error as the command prints it: the error value's contents in place of its
/// `table: 0x...` text, where `error` raised it, then the traceback.
pub fn report(values: &Remembered, error: &spindle::TaskError) -> String {
    match values.describe(&error.message) {
        Some(contents) if error.traceback.is_empty() => contents,
        Some(contents) => format!("{contents}\n{}", error.traceback.trim_end()),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_written_as_luaus_tostring_writes_it() {
        assert_eq!(
            address_text("table: 0x55aef3d90240").as_deref(),
            Some("table: 0x000055aef3d90240")
        );
        assert_eq!(address_text("main.luau:3: boom"), None);
        assert_eq!(address_text("table: 0xnope"), None);
    }

    #[test]
    fn a_table_raised_by_error_is_described_by_its_contents_and_others_are_not() {
        let lua = Lua::new();
        let values = install(&lua).unwrap();
        let text: String = lua
            .load(
                r#"
                local ok, e = pcall(error, { code = 7, tags = { "a" } })
                assert(not ok and e.code == 7, "pcall gets the table back")
                local plain = pcall(error, "plain")
                return tostring(e)
                "#,
            )
            .eval()
            .unwrap();
        assert_eq!(
            values.describe(&text).as_deref(),
            Some(r#"{ code = 7, tags = { "a" } }"#)
        );
        assert_eq!(values.describe("plain"), None);
        assert_eq!(values.describe("table: 0x0000000000000001"), None);
    }
}
