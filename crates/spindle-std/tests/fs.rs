//! `@spindle/fs` as scripts use it, on a scheduler driven by async-io, in a temporary directory:
//! what each function does, the errors naming the path and the system's reason, a task waiting
//! on the disk leaving the others running, and cancellation.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use async_io::Timer;
use mlua::Lua;
use spindle::Scheduler;

/// A VM with the task library, `fs` and `dir` (the temporary directory, with a `/` at its end)
/// as globals; the errors the scheduler reports are kept.
struct Host {
    lua: Lua,
    scheduler: Scheduler,
    errors: Rc<RefCell<Vec<String>>>,
    dir: tempfile::TempDir,
}

fn host() -> Host {
    let lua = Lua::new();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let seen = errors.clone();
    let scheduler = Scheduler::builder()
        .on_error(move |_, error| seen.borrow_mut().push(error.message.clone()))
        .build(&lua)
        .unwrap();
    scheduler.install_task_library().unwrap();
    let dir = tempfile::tempdir().unwrap();
    lua.globals()
        .set("fs", spindle_std::fs::module(&scheduler).unwrap())
        .unwrap();
    lua.globals()
        .set("dir", format!("{}/", dir.path().display()))
        .unwrap();
    Host {
        lua,
        scheduler,
        errors,
        dir,
    }
}

impl Host {
    /// Runs `code` as a task named `test` until no work is left; returns the task's result.
    fn run<R: mlua::FromLuaMulti>(&self, code: &str) -> R {
        let main = self
            .lua
            .load(code)
            .set_name("=test")
            .into_function()
            .unwrap();
        let task = self.scheduler.spawn(main, ()).unwrap();
        async_io::block_on(self.scheduler.run(Timer::at)).unwrap();
        assert_eq!(*self.errors.borrow(), Vec::<String>::new());
        self.scheduler
            .take_result::<R>(&task)
            .unwrap()
            .expect("the task ended")
            .into_result()
            .unwrap()
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn files_are_written_appended_and_read_back() {
    let host = host();
    let text: String = host.run(
        r#"
        fs.writeFile(dir .. "note.txt", "hello")
        fs.appendFile(dir .. "note.txt", ", ")
        fs.appendFile(dir .. "note.txt", buffer.fromstring("world"))
        fs.appendFile(dir .. "new.txt", "made by append")
        return fs.readFile(dir .. "note.txt")
        "#,
    );
    assert_eq!(text, "hello, world");
    assert_eq!(
        std::fs::read_to_string(host.path("new.txt")).unwrap(),
        "made by append"
    );
    // writeFile replaces what was there.
    let text: String = host
        .run(r#"fs.writeFile(dir .. "note.txt", "short") return fs.readFile(dir .. "note.txt")"#);
    assert_eq!(text, "short");
}

#[test]
fn contents_are_bytes_whatever_their_encoding() {
    let host = host();
    std::fs::write(host.path("bin"), [0u8, 255, 10, 128]).unwrap();
    let (length, last): (u32, u32) = host.run(
        r#"
        local bytes = fs.readFile(dir .. "bin")
        fs.writeFile(dir .. "copy", buffer.fromstring(bytes))
        return #bytes, string.byte(bytes, 4)
        "#,
    );
    assert_eq!((length, last), (4, 128));
    assert_eq!(
        std::fs::read(host.path("copy")).unwrap(),
        [0u8, 255, 10, 128]
    );
}

#[test]
fn directories_are_made_listed_sorted_and_removed_with_their_contents() {
    let host = host();
    let listing: String = host.run(
        r#"
        fs.writeDir(dir .. "a/b/c")
        fs.writeFile(dir .. "a/z.txt", "")
        fs.writeFile(dir .. "a/m.txt", "")
        local listing = table.concat(fs.readDir(dir .. "a"), ",")
        fs.removeFile(dir .. "a/m.txt")
        fs.removeDir(dir .. "a/b")
        return listing .. " / " .. table.concat(fs.readDir(dir .. "a"), ",")
        "#,
    );
    assert_eq!(listing, "b,m.txt,z.txt / z.txt");
}

#[test]
fn metadata_tells_kind_size_and_times_and_absence() {
    let host = host();
    let summary: String = host.run(
        r#"
        fs.writeFile(dir .. "f", "12345")
        fs.writeDir(dir .. "d")
        local f, d, none = fs.metadata(dir .. "f"), fs.metadata(dir .. "d"), fs.metadata(dir .. "none")
        assert(type(f.modifiedAt) == "number" and f.modifiedAt > 1.6e9)
        return table.concat({
            f.kind, tostring(f.size), tostring(f.exists), tostring(f.permissions.readOnly),
            d.kind, tostring(d.size), tostring(none.exists), tostring(none.kind),
            tostring(fs.isFile(dir .. "f")), tostring(fs.isDir(dir .. "f")),
            tostring(fs.isDir(dir .. "d")), tostring(fs.isFile(dir .. "none")),
        }, " ")
        "#,
    );
    assert_eq!(
        summary,
        "file 5 true false dir nil false nil true false true false"
    );
}

#[test]
fn copy_and_move_refuse_to_replace_unless_asked() {
    let host = host();
    let outcome: String = host.run(
        r#"
        fs.writeDir(dir .. "src/inner")
        fs.writeFile(dir .. "src/inner/x", "x")
        fs.copy(dir .. "src", dir .. "dst")
        local refused = select(2, pcall(fs.copy, dir .. "src", dir .. "dst"))
        fs.writeFile(dir .. "src/inner/x", "y")
        fs.copy(dir .. "src", dir .. "dst", true)
        fs.move(dir .. "dst", dir .. "moved")
        fs.writeFile(dir .. "other", "o")
        fs.move(dir .. "other", dir .. "moved", { overwrite = true })
        return refused .. " | " .. fs.readFile(dir .. "moved") .. tostring(fs.isDir(dir .. "dst"))
        "#,
    );
    let dir = host.dir.path().display();
    assert_eq!(
        outcome,
        format!("fs.copy: cannot copy '{dir}/src' to '{dir}/dst': the target exists (pass true as the third argument to replace it) | ofalse")
    );
}

#[test]
fn errors_name_the_callers_line_the_path_and_the_systems_reason() {
    let host = host();
    let errors: Vec<String> = host.run(
        r#"
        local errors = {}
        local function try(f, ...)
            local ok, message = pcall(f, ...)
            assert(not ok)
            table.insert(errors, message)
        end
        try(function() return fs.readFile("no/such/file.txt") end)
        try(function() fs.writeFile(dir .. "missing/x.txt", "x") end)
        try(function() return fs.readDir(dir .. "nothing") end)
        try(function() fs.removeFile(dir .. "gone") end)
        try(function() fs.writeFile(42, "x") end)
        try(function() fs.writeFile(dir .. "x", {}) end)
        try(function() fs.move(dir .. "a", dir .. "b", 3) end)
        return errors
        "#,
    );
    let dir = host.dir.path().display();
    assert_eq!(
        errors,
        [
            "test:8: fs.readFile: cannot read 'no/such/file.txt': No such file or directory"
                .to_owned(),
            format!("test:9: fs.writeFile: cannot write '{dir}/missing/x.txt': No such file or directory"),
            format!("test:10: fs.readDir: cannot read the directory '{dir}/nothing': No such file or directory"),
            format!("test:11: fs.removeFile: cannot remove '{dir}/gone': No such file or directory"),
            "test:12: invalid argument #1 to 'writeFile' (string expected, got number)".to_owned(),
            "test:13: invalid argument #2 to 'writeFile' (string or buffer expected, got table)"
                .to_owned(),
            "test:14: invalid argument #3 to 'move' (boolean or table expected, got number)"
                .to_owned(),
        ]
    );
}

#[test]
fn a_script_that_replaces_error_and_type_still_gets_argument_errors_at_its_line() {
    // The module binds the globals it uses when it is made: replacing them afterwards changes
    // nothing in its checks (a replaced `error` that returns would make refusals silent).
    let host = host();
    let errors: Vec<String> = host.run(
        r#"
        local pcall, select = pcall, select
        error = function() end
        type = function() return "string" end
        typeof = function() return "string" end
        string.format = function() return "" end
        return {
            select(2, pcall(function() return fs.readFile(42) end)),
            select(2, pcall(function() fs.writeFile(dir .. "x", {}) end)),
            select(2, pcall(function() return fs.readFile(dir .. "absent") end)),
        }
        "#,
    );
    let dir = host.dir.path().display();
    assert_eq!(
        errors,
        [
            "test:8: invalid argument #1 to 'readFile' (string expected, got number)".to_owned(),
            "test:9: invalid argument #2 to 'writeFile' (string or buffer expected, got table)"
                .to_owned(),
            format!("test:10: fs.readFile: cannot read '{dir}/absent': No such file or directory"),
        ]
    );
    assert!(!host.path("x").exists());
}

/// Makes a named pipe: opening it for reading blocks until a writer opens it, which stands for
/// a slow disk.
#[cfg(unix)]
fn fifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

/// Opens the pipe for writing from another thread and writes `text`, which lets its reader go.
#[cfg(unix)]
fn feed(path: &Path, text: &'static str) -> std::thread::JoinHandle<()> {
    let path = path.to_owned();
    std::thread::spawn(move || std::fs::write(path, text).unwrap())
}

/// Should a read block the Lua thread, this lets it go after a while (opening a pipe for reading
/// and writing does not wait on Linux), so that a test fails on its assertion instead of hanging.
#[cfg(target_os = "linux")]
fn unstick_after_a_while(pipe: &Path) {
    let pipe = pipe.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(5));
        if let Ok(mut pipe) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(pipe)
        {
            use std::io::Write;
            let _ = pipe.write_all(b"late");
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

#[cfg(target_os = "linux")]
#[test]
fn a_task_waiting_on_the_disk_does_not_hold_up_the_others() {
    let host = host();
    fifo(&host.path("pipe"));
    unstick_after_a_while(&host.path("pipe"));
    let reader = host
        .scheduler
        .spawn(
            host.lua
                .load(r#"return fs.readFile(dir .. "pipe")"#)
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    host.lua
        .load(
            r#"
            task.spawn(function()
                for i = 1, 3 do task.wait(0.001) end
                ticked = true
            end)
            "#,
        )
        .exec()
        .unwrap();
    let scheduler = &host.scheduler;
    let hosting = async {
        while !host.lua.globals().get::<bool>("ticked").unwrap() {
            Timer::after(Duration::from_millis(2)).await;
        }
        // The other task finished while the reader still waits on the pipe.
        assert!(!reader.is_finished());
        let writer = feed(&host.path("pipe"), "through the pipe");
        let read = scheduler.join::<String>(&reader).await.unwrap();
        writer.join().unwrap();
        read.into_result().unwrap()
    };
    let read = async_io::block_on(scheduler.run_until(Timer::at, hosting)).unwrap();
    assert_eq!(read, "through the pipe");
}

#[cfg(target_os = "linux")]
#[test]
fn cancelling_a_task_waiting_on_the_disk_drops_its_wait_at_once() {
    let host = host();
    fifo(&host.path("pipe"));
    unstick_after_a_while(&host.path("pipe"));
    let reader = host
        .scheduler
        .spawn(
            host.lua
                .load(r#"fs.readFile(dir .. "pipe") reached = true"#)
                .into_function()
                .unwrap(),
            (),
        )
        .unwrap();
    assert!(host.scheduler.has_work());
    host.scheduler.cancel(&reader).unwrap();
    // The run ends although the pool's thread is still blocked opening the pipe.
    async_io::block_on(host.scheduler.run(Timer::at)).unwrap();
    assert!(!host.scheduler.has_work());
    // Let the pool's thread go, if it had started: opening a pipe for reading and writing does
    // not wait for a reader on Linux. The read's result is thrown away.
    {
        use std::io::Write;
        let mut pipe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(host.path("pipe"))
            .unwrap();
        pipe.write_all(b"late").unwrap();
    }
    assert!(!host.lua.globals().get::<bool>("reached").unwrap());
    assert!(host.errors.borrow().is_empty());
}
