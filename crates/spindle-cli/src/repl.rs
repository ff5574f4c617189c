//! `spindle repl`: Luau at a prompt, each entry run as a task of the same scheduler as
//! `spindle run` builds (the task library, `require`, the `@spindle/*` modules).
//!
//! - **Input.** A thread of its own reads lines with rustyline (editing, history in
//!   `~/.spindle_history`); the main thread drives the scheduler while it waits, so that tasks
//!   started at the prompt (`task.spawn`, `task.delay`, a server of `@spindle/net`) go on
//!   running between entries. When standard input is not a terminal, lines are read as they
//!   come, as bytes (a line that is not UTF-8 is Luau source all the same), with no prompt and
//!   no history, which is how the tests drive it.
//! - **Entries.** An entry is first compiled as `return <entry>` (an expression), then as it is
//!   (statements); one that is incomplete (Luau's `... got <eof>`, or a long string or comment
//!   left open) goes on at the next line, under the `>> ` prompt. An entry the input ends in
//!   the middle of is reported with what it lacks. Each runs as a task; the prompt comes back when it ends, however
//!   long it waits (`task.wait(1)`, an async function). Its values are printed readably:
//!   strings quoted, tables by their contents, several values separated by commas. Locals end
//!   with their entry, as in `lua`'s REPL: keep values in globals.
//! - **Errors** are printed with their traceback and the session goes on.
//! - **Ctrl-C** while an entry runs Lua code stops that code (the VM interrupt raises
//!   `interrupted` in the task that was running, at each interrupt until it ends); while the
//!   entry waits, it cancels the entry. At the prompt it clears the line. Tasks left in the
//!   background are not touched. **Ctrl-D** (the end of input) ends the session, and the tasks
//!   still waiting with it.
//!
//! Invariant: Lua runs on the main thread only; the reader thread touches the terminal and
//! the history, and hands lines over through a channel.

use std::cell::Cell;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle::mlua::{self, Function, Lua, MultiValue, VmState};
use spindle::{Outcome, Scheduler, TaskId};
use spindle_std::process::{Exit, ProcessInfo};
use tokio::sync::mpsc;

use crate::{build_scheduler, LoadError, RunOptions};

/// The message of the error Ctrl-C raises in running Lua code.
pub const INTERRUPTED: &str = "interrupted";

/// How often the driver looks at Ctrl-C and `process.exit` while Lua is not running.
const POLL: Duration = Duration::from_millis(20);

/// Shows values as the REPL prints them: strings quoted, anything else as `stdio.format` does
/// (tables by their contents); a value whose `__tostring` fails is shown by its type. The
/// functions it uses are bound when it loads, before any entry could replace them.
const SHOW_LUAU: &str = r##"
local format = ...
local select, type, typeof, pcall = select, type, typeof, pcall
local quote, concat = string.format, table.concat
return function(...)
	local parts = {}
	for i = 1, select("#", ...) do
		local value = select(i, ...)
		if type(value) == "string" then
			parts[i] = quote("%q", value)
		else
			local ok, text = pcall(format, value)
			if ok then
				parts[i] = text
			elseif type(text) == "string" then
				parts[i] = `<{typeof(value)} whose __tostring failed: {text}>`
			else
				-- The failure is a value that may not turn into text either.
				parts[i] = `<{typeof(value)} whose __tostring failed with a {typeof(text)}>`
			end
		end
	end
	return concat(parts, ", ")
end
"##;

/// What the reader thread hands over.
enum Input {
    Line(Vec<u8>),
    /// Ctrl-C at the prompt.
    Interrupted,
    /// Ctrl-D, or the end of standard input.
    End,
}

/// The reader thread's two ends: prompts go in, lines come out.
struct Reader {
    prompts: std::sync::mpsc::Sender<&'static str>,
    lines: mpsc::UnboundedReceiver<Input>,
}

impl Reader {
    fn start() -> Reader {
        let (prompts, asked) = std::sync::mpsc::channel::<&'static str>();
        let (give, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || read_lines(&asked, &give));
        Reader { prompts, lines }
    }

    /// The next line, read under `prompt`.
    async fn next(&mut self, prompt: &'static str) -> Input {
        if self.prompts.send(prompt).is_err() {
            return Input::End;
        }
        self.lines.recv().await.unwrap_or(Input::End)
    }
}

fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".spindle_history"))
}

/// The reader thread: a line for each prompt asked for, until the end of input.
fn read_lines(
    asked: &std::sync::mpsc::Receiver<&'static str>,
    give: &mpsc::UnboundedSender<Input>,
) {
    use rustyline::error::ReadlineError;
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return read_piped_lines(asked, give);
    }
    let config = rustyline::Config::builder()
        .max_history_size(1000)
        .map(|builder| builder.auto_add_history(true).build());
    let editor = config.and_then(rustyline::DefaultEditor::with_config);
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(error) => {
            eprintln!("spindle repl: cannot read the terminal: {error}");
            let _ = give.send(Input::End);
            return;
        }
    };
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    while let Ok(prompt) = asked.recv() {
        let input = match editor.readline(prompt) {
            Ok(line) => {
                if let Some(path) = &history {
                    let _ = editor.save_history(path);
                }
                Input::Line(line.into_bytes())
            }
            Err(ReadlineError::Interrupted) => Input::Interrupted,
            Err(ReadlineError::Eof) => Input::End,
            Err(error) => {
                eprintln!("spindle repl: cannot read input: {error}");
                Input::End
            }
        };
        let end = matches!(input, Input::End);
        if give.send(input).is_err() || end {
            return;
        }
    }
}

/// Lines from a pipe or a file, without prompts or history: as bytes, so that a line that is not
/// UTF-8 is run (Luau strings hold any bytes) rather than ending the session.
fn read_piped_lines(
    asked: &std::sync::mpsc::Receiver<&'static str>,
    give: &mpsc::UnboundedSender<Input>,
) {
    use std::io::BufRead;
    let mut stdin = std::io::stdin().lock();
    while asked.recv().is_ok() {
        let mut line = Vec::new();
        let input = match stdin.read_until(b'\n', &mut line) {
            Ok(0) => Input::End,
            Ok(_) => {
                if line.ends_with(b"\n") {
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
                Input::Line(line)
            }
            Err(error) => {
                eprintln!("spindle repl: cannot read input: {error}");
                Input::End
            }
        };
        let end = matches!(input, Input::End);
        if give.send(input).is_err() || end {
            return;
        }
    }
}

/// Ctrl-C: the signal's flag, and the task the interrupt stops once it took the flag.
struct Interrupt {
    signalled: Arc<AtomicBool>,
    /// `Some(task)` once running Lua code took the flag: the task (or `None`, code the host
    /// ran) whose code raises `interrupted` until it ends.
    target: Rc<Cell<Option<Option<TaskId>>>>,
}

impl Interrupt {
    /// Registers the Ctrl-C handler and the VM interrupt that reads it.
    fn install(lua: &Lua) -> Result<Interrupt, LoadError> {
        let signalled = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGINT, signalled.clone())
            .map_err(|e| LoadError(format!("cannot handle Ctrl-C: {e}")))?;
        let target: Rc<Cell<Option<Option<TaskId>>>> = Rc::default();
        let (flag, stopping) = (signalled.clone(), target.clone());
        lua.set_interrupt(move |lua| {
            let running = || Scheduler::from_lua(lua).and_then(|s| s.current_task());
            let target = match stopping.get() {
                Some(target) => target,
                None if flag.swap(false, Ordering::Relaxed) => {
                    let target = running();
                    stopping.set(Some(target));
                    target
                }
                None => return Ok(VmState::Continue),
            };
            if running() == target {
                Err(mlua::Error::runtime(INTERRUPTED))
            } else {
                Ok(VmState::Continue)
            }
        });
        Ok(Interrupt { signalled, target })
    }

    /// Whether Ctrl-C came while no Lua ran (nothing took the flag), taking it.
    fn take_waiting(&self) -> bool {
        self.target.get().is_none() && self.signalled.swap(false, Ordering::Relaxed)
    }

    /// After an entry: the stopped code is over.
    fn settle(&self) {
        self.target.set(None);
    }
}

/// Runs the REPL until the end of input or `process.exit`.
pub fn run(options: &RunOptions) -> Result<ExitCode, LoadError> {
    let lua = Lua::new();
    let exit = Exit::new();
    let scheduler = build_scheduler(&lua, options, &exit)?;
    lua.set_app_data(ProcessInfo::with_os_args(Vec::new(), exit.clone()));
    let stdio = spindle_std::stdio::module(&lua).map_err(|e| LoadError(e.to_string()))?;
    let show: Function = lua
        .load(SHOW_LUAU)
        .set_name("=[spindle repl]")
        .call(stdio.get::<Function>("format"))
        .map_err(|e| LoadError(e.to_string()))?;
    install_print(&lua).map_err(|e| LoadError(e.to_string()))?;
    crate::apply_memory_limit(&lua, options)?;
    let interrupt = Interrupt::install(&lua)?;
    let runtime = crate::async_runtime()?;
    let _terminal = Terminal::save();
    let session = Session {
        lua: &lua,
        scheduler: &scheduler,
        exit: &exit,
        show,
        interrupt,
    };
    let ended = runtime.block_on(session.run(Reader::start()));
    if let Err(error) = ended {
        eprintln!("spindle: {error}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::from(exit.requested().unwrap_or(0)))
}

/// `print` as Luau's, but written through Rust's standard output, which the REPL's own output
/// goes through, line by line: Luau's writes to C's buffer, which a pipe holds until the end,
/// so that a task's `print` between entries would come out late and out of order.
fn install_print(lua: &Lua) -> mlua::Result<()> {
    let tostring: Function = lua.globals().get("tostring")?;
    let print = lua.create_function(move |_, values: MultiValue| {
        let mut line = Vec::new();
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                line.push(b'\t');
            }
            line.extend_from_slice(&tostring.call::<mlua::LuaString>(value)?.as_bytes());
        }
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        out.write_all(&line)
            .and_then(|()| out.flush())
            .map_err(|e| mlua::Error::runtime(format!("print: cannot write: {e}")))
    })?;
    lua.globals().set("print", print)
}

/// The terminal's settings when the session started, put back when it ends: a script's
/// `process.exit` may end it while the reader thread has the terminal in rustyline's raw mode.
struct Terminal(#[cfg(unix)] Option<nix::sys::termios::Termios>);

impl Terminal {
    fn save() -> Terminal {
        #[cfg(unix)]
        return Terminal(nix::sys::termios::tcgetattr(std::io::stdin()).ok());
        #[cfg(not(unix))]
        return Terminal();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(settings) = &self.0 {
            use nix::sys::termios::{tcsetattr, SetArg};
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, settings);
            // And the bracketed paste that rustyline turns on while it reads.
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                let _ = std::io::stdout().write_all(b"\x1b[?2004l");
                let _ = std::io::stdout().flush();
            }
        }
    }
}

struct Session<'a> {
    lua: &'a Lua,
    scheduler: &'a Scheduler,
    exit: &'a Exit,
    show: Function,
    interrupt: Interrupt,
}

/// What compiling the lines so far gave.
enum Compiled {
    Entry(Function),
    /// More lines may complete it; the message says what it lacks.
    Incomplete(String),
    Refused(String),
}

impl Session<'_> {
    async fn run(&self, mut reader: Reader) -> spindle::Result<()> {
        let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
        let mut entry = Vec::new();
        loop {
            let prompt = if entry.is_empty() { "> " } else { ">> " };
            let read = reader.next(prompt);
            let input = self
                .scheduler
                .run_until(sleeper, self.unless_exit(read))
                .await?;
            self.interrupt.settle();
            let Some(input) = input else { break };
            match input {
                Input::End => {
                    // The input ended in the middle of an entry, which is not run: say why.
                    match self.compile(&entry) {
                        Compiled::Incomplete(message) if !message.is_empty() => {
                            eprintln!("{message}")
                        }
                        _ => {}
                    }
                    break;
                }
                Input::Interrupted => entry.clear(),
                Input::Line(line) => {
                    if entry.is_empty() && line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    entry.extend_from_slice(&line);
                    entry.push(b'\n');
                    match self.compile(&entry) {
                        Compiled::Incomplete(_) => continue,
                        Compiled::Refused(message) => eprintln!("{message}"),
                        Compiled::Entry(function) => self.run_entry(function).await?,
                    }
                    entry.clear();
                }
            }
            if self.exit.requested().is_some() {
                break;
            }
        }
        self.scheduler.shutdown()
    }

    /// `future`'s output, or `None` once a script calls `process.exit`.
    async fn unless_exit<F: std::future::Future>(&self, future: F) -> Option<F::Output> {
        let watch = async {
            loop {
                tokio::time::sleep(POLL).await;
                if self.exit.requested().is_some() {
                    return None;
                }
            }
        };
        futures_lite::future::or(async { Some(future.await) }, watch).await
    }

    /// Compiles the lines so far; an empty entry is incomplete, with nothing to say.
    fn compile(&self, entry: &[u8]) -> Compiled {
        if entry.is_empty() {
            return Compiled::Incomplete(String::new());
        }
        let load = |source: &[u8]| {
            self.lua
                .load(source)
                .set_name("=repl")
                .set_mode(mlua::chunk::ChunkMode::Text)
                .into_function()
        };
        if let Ok(function) = load(&[b"return ", entry].concat()) {
            return Compiled::Entry(function);
        }
        match load(entry) {
            Ok(function) => Compiled::Entry(function),
            Err(mlua::Error::SyntaxError {
                incomplete_input: true,
                message,
            }) => Compiled::Incomplete(message),
            // Luau calls a long string or comment left open malformed; the next line may close it.
            Err(mlua::Error::SyntaxError { message, .. }) if ends_in_long_bracket(entry) => {
                Compiled::Incomplete(message)
            }
            Err(mlua::Error::SyntaxError { message, .. }) => Compiled::Refused(message),
            Err(other) => Compiled::Refused(other.to_string()),
        }
    }

    /// Runs an entry as a task, driving the scheduler until it ends, and prints its values.
    async fn run_entry(&self, function: Function) -> spindle::Result<()> {
        let sleeper = |deadline: Instant| tokio::time::sleep_until(deadline.into());
        self.interrupt.settle();
        let task = self.scheduler.spawn(function, ());
        let task = match task {
            Ok(task) => task,
            Err(error) => {
                eprintln!("{error}");
                return Ok(());
            }
        };
        let cancelled = async {
            loop {
                tokio::time::sleep(POLL).await;
                if self.interrupt.take_waiting() || self.exit.requested().is_some() {
                    return None;
                }
            }
        };
        let joined = async { Some(self.scheduler.join::<MultiValue>(&task).await) };
        let outcome = self
            .scheduler
            .run_until(sleeper, futures_lite::future::or(joined, cancelled))
            .await?;
        self.interrupt.settle();
        match outcome {
            // Failures were printed by the error handler.
            Some(Ok(Outcome::Finished(values))) if !values.is_empty() => {
                match self.show.call::<String>(values) {
                    Ok(text) => println!("{text}"),
                    Err(error) => eprintln!("{error}"),
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => eprintln!("{error}"),
            None if self.exit.requested().is_some() => {}
            None => {
                self.scheduler.cancel(&task)?;
                eprintln!("{INTERRUPTED}");
            }
        }
        Ok(())
    }
}

/// Whether `source` ends inside a long string (`[[ ...`, `[==[ ...`) or a long comment
/// (`--[[ ...`). Quoted strings are skipped (a `[[` in one opens nothing), short comments too.
fn ends_in_long_bracket(source: &[u8]) -> bool {
    let mut at = 0;
    while at < source.len() {
        let rest = &source[at..];
        let comment = rest.starts_with(b"--");
        let bracket = if comment { &rest[2..] } else { rest };
        if let Some(level) = long_bracket_level(bracket) {
            // Past the opening bracket, which starts after the comment's `--` if there is one.
            let open = at + (rest.len() - bracket.len()) + level + 2;
            match closing(source, open, level) {
                Some(end) => at = end,
                None => return true,
            }
        } else if comment {
            at += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        } else if let quote @ (b'"' | b'\'' | b'`') = rest[0] {
            at += 1;
            while let Some(&byte) = source.get(at) {
                at += match byte {
                    // An escape, a newline after a backslash included.
                    b'\\' => 2,
                    // A string broken by a newline, which Luau reports.
                    b'\n' => break,
                    _ => 1,
                };
                if byte == quote {
                    break;
                }
            }
        } else {
            at += 1;
        }
    }
    false
}

/// The level of the long bracket `[`, `=` * level, `[` that `text` starts with.
fn long_bracket_level(text: &[u8]) -> Option<usize> {
    let rest = text.strip_prefix(b"[")?;
    let level = rest.iter().take_while(|&&b| b == b'=').count();
    (rest.get(level) == Some(&b'[')).then_some(level)
}

/// Just past the `]`, `=` * level, `]` that closes a long bracket opened before `from`.
fn closing(source: &[u8], from: usize, level: usize) -> Option<usize> {
    let mut close = vec![b']'; level + 2];
    close[1..=level].fill(b'=');
    let after = source.get(from..)?;
    let at = after.windows(close.len()).position(|w| w == close)?;
    Some(from + at + close.len())
}

#[cfg(test)]
mod tests {
    use super::ends_in_long_bracket;

    #[test]
    fn long_strings_and_comments_left_open_are_found_and_closed_ones_are_not() {
        for open in [
            "x = [[abc\n",
            "x = [==[a]]\n",
            "--[[ note\n",
            "--[=[ a ]] b\n",
            "y = 1 -- c\nx = [[",
        ] {
            assert!(ends_in_long_bracket(open.as_bytes()), "{open:?}");
        }
        for closed in [
            "x = [[abc]]\n",
            "x = [==[a]]]==]\n",
            "--[[ note ]] y = 1\n",
            "-- [[ a short comment\n",
            "x = \"[[\"\n",
            "x = '\\'[['\n",
            "t[ [[k]] ] = 1\n",
            "x = a[b[1]]\n",
        ] {
            assert!(!ends_in_long_bracket(closed.as_bytes()), "{closed:?}");
        }
    }
}
