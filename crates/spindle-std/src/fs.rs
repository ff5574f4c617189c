//! `@spindle/fs`: files and directories, as Spindle async functions. Shaped as Lune's `fs`:
//! `readFile`, `readDir`, `writeFile`, `writeDir`, `removeFile`, `removeDir`, `metadata`,
//! `isFile`, `isDir`, `move`, `copy`, plus `appendFile`.
//!
//! Each call runs its blocking file-system work on a thread of the `blocking` crate's pool and
//! suspends only the calling task until that work is done, so a task waiting on the disk does
//! not hold up the others; the Lua thread never blocks on the disk. The scheduler stays free of
//! any runtime: the pool wakes the task's waker when the work is done.
//!
//! Cancelling a task that waits on the file system (or ending the run) drops its future at
//! once, but work already handed to the pool cannot be stopped: a write that had begun may still
//! complete in the background. Its result is thrown away.
//!
//! Errors are raised as plain strings at the caller's line, naming the function, the path and
//! the operating system's reason: `main.luau:3: fs.readFile: cannot read 'x.txt': No such file
//! or directory`.
//!
//! Invariant: no Lua value crosses to the pool's threads: paths and contents are copied to Rust
//! bytes before the work starts, and Lua values are made on the Lua thread once it is done.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mlua::{Lua, LuaString, Table, Value};
use spindle::Scheduler;

/// The Lua side of `@spindle/fs`.
const FS_LUAU: &str = include_str!("fs.luau");

/// Builds the `@spindle/fs` module for the scripts of `scheduler`.
///
/// ```
/// # let lua = mlua::Lua::new();
/// # let scheduler = spindle::Scheduler::new(&lua)?;
/// # scheduler.install_task_library()?;
/// let dir = std::env::temp_dir().join(format!("spindle-fs-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// lua.globals().set("fs", spindle_std::fs::module(&scheduler)?)?;
/// lua.globals().set("dir", dir.display().to_string())?;
/// let task = scheduler.spawn(lua.load(r#"
///     fs.writeFile(dir .. "/note.txt", "hello")
///     fs.appendFile(dir .. "/note.txt", ", world")
///     return fs.readFile(dir .. "/note.txt")
/// "#).into_function()?, ())?;
/// async_io::block_on(scheduler.run(async_io::Timer::at))?;
/// let text: String = scheduler.take_result(&task)?.unwrap().into_result()?;
/// assert_eq!(text, "hello, world");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn module(scheduler: &Scheduler) -> mlua::Result<Table> {
    let lua = scheduler.lua();
    let primitives = lua.create_table()?;

    primitives.raw_set(
        "readFile",
        scheduler.create_async_function(|lua: Lua, path: LuaString| {
            let path = path_of(&path);
            async move {
                let read = unblock_on(path.clone(), |p| std::fs::read(p)).await;
                match read {
                    Ok(bytes) => answer(&lua, Ok(Value::String(lua.create_string(bytes)?))),
                    Err(e) => answer(&lua, Err(reason("cannot read", &path, &e))),
                }
            }
        })?,
    )?;
    primitives.raw_set(
        "readDir",
        scheduler.create_async_function(|lua: Lua, path: LuaString| {
            let path = path_of(&path);
            async move {
                match unblock_on(path.clone(), read_dir).await {
                    Ok(names) => {
                        let list = lua.create_table_with_capacity(names.len(), 0)?;
                        for name in names {
                            list.raw_push(lua.create_string(name)?)?;
                        }
                        answer(&lua, Ok(Value::Table(list)))
                    }
                    Err(e) => answer(&lua, Err(reason("cannot read the directory", &path, &e))),
                }
            }
        })?,
    )?;
    for (name, append) in [("writeFile", false), ("appendFile", true)] {
        primitives.raw_set(
            name,
            scheduler.create_async_function(
                move |lua: Lua, (path, contents): (LuaString, Value)| {
                    let path = path_of(&path);
                    let bytes = match &contents {
                        Value::String(s) => Some(s.as_bytes().to_vec()),
                        Value::Buffer(b) => Some(b.to_vec()),
                        _ => None,
                    };
                    async move {
                        let Some(bytes) = bytes else {
                            return answer(&lua, Err("string or buffer expected".to_owned()));
                        };
                        let written =
                            unblock_on(path.clone(), move |p| write(p, &bytes, append)).await;
                        let verb = if append {
                            "cannot append to"
                        } else {
                            "cannot write"
                        };
                        answer(
                            &lua,
                            written
                                .map(|()| Value::Nil)
                                .map_err(|e| reason(verb, &path, &e)),
                        )
                    }
                },
            )?,
        )?;
    }
    let simple: [(&str, &str, PathOperation); 3] = [
        ("writeDir", "cannot create the directory", |p| {
            std::fs::create_dir_all(p)
        }),
        ("removeFile", "cannot remove", |p| std::fs::remove_file(p)),
        ("removeDir", "cannot remove the directory", |p| {
            std::fs::remove_dir_all(p)
        }),
    ];
    for (name, verb, operation) in simple {
        primitives.raw_set(
            name,
            scheduler.create_async_function(move |lua: Lua, path: LuaString| {
                let path = path_of(&path);
                async move {
                    let done = unblock_on(path.clone(), operation).await;
                    answer(
                        &lua,
                        done.map(|()| Value::Nil)
                            .map_err(|e| reason(verb, &path, &e)),
                    )
                }
            })?,
        )?;
    }
    primitives.raw_set(
        "metadata",
        scheduler.create_async_function(|lua: Lua, path: LuaString| {
            let path = path_of(&path);
            async move {
                match unblock_on(path.clone(), |p| std::fs::symlink_metadata(p)).await {
                    Ok(meta) => answer(&lua, Ok(Value::Table(metadata_table(&lua, &meta)?))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        let absent = lua.create_table()?;
                        absent.raw_set("exists", false)?;
                        answer(&lua, Ok(Value::Table(absent)))
                    }
                    Err(e) => answer(&lua, Err(reason("cannot read the metadata of", &path, &e))),
                }
            }
        })?,
    )?;
    for (name, wanted_dir) in [("isFile", false), ("isDir", true)] {
        primitives.raw_set(
            name,
            scheduler.create_async_function(move |lua: Lua, path: LuaString| {
                let path = path_of(&path);
                async move {
                    match unblock_on(path.clone(), |p| std::fs::metadata(p)).await {
                        Ok(meta) => {
                            let is = if wanted_dir {
                                meta.is_dir()
                            } else {
                                meta.is_file()
                            };
                            answer(&lua, Ok(Value::Boolean(is)))
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            answer(&lua, Ok(Value::Boolean(false)))
                        }
                        Err(e) => {
                            answer(&lua, Err(reason("cannot read the metadata of", &path, &e)))
                        }
                    }
                }
            })?,
        )?;
    }
    for (name, copying) in [("move", false), ("copy", true)] {
        primitives.raw_set(
            name,
            scheduler.create_async_function(
                move |lua: Lua, (from, to, overwrite): (LuaString, LuaString, bool)| {
                    let (from, to) = (path_of(&from), path_of(&to));
                    async move {
                        let (src, dst) = (from.clone(), to.clone());
                        let done =
                            blocking::unblock(move || transfer(&src, &dst, overwrite, copying))
                                .await;
                        let verb = if copying {
                            "cannot copy"
                        } else {
                            "cannot move"
                        };
                        answer(
                            &lua,
                            done.map(|()| Value::Nil).map_err(|e| {
                                format!(
                                    "{verb} '{}' to '{}': {}",
                                    from.display(),
                                    to.display(),
                                    os_reason(&e)
                                )
                            }),
                        )
                    }
                },
            )?,
        )?;
    }

    let build = lua
        .load(FS_LUAU)
        .set_name("=[spindle fs]")
        .into_function()?;
    build.call(primitives)
}

/// A call on one path that returns nothing.
type PathOperation = fn(&Path) -> io::Result<()>;

/// What the Lua side receives: `true` and the value, or `false` and the refusal's text, which
/// it raises at the caller's line.
fn answer(lua: &Lua, result: Result<Value, String>) -> mlua::Result<(bool, Value)> {
    match result {
        Ok(value) => Ok((true, value)),
        Err(message) => Ok((false, Value::String(lua.create_string(message)?))),
    }
}

/// Runs `work` on `path` on the blocking pool.
async fn unblock_on<T: Send + 'static>(
    path: PathBuf,
    work: impl FnOnce(&Path) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    blocking::unblock(move || work(&path)).await
}

/// A Lua string as a path: on unix the bytes as they are; elsewhere as UTF-8, with U+FFFD
/// where it is not.
fn path_of(text: &LuaString) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(&text.as_bytes()))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(text.to_string_lossy())
    }
}

/// `"{verb} '{path}': {reason}"`.
fn reason(verb: &str, path: &Path, error: &io::Error) -> String {
    format!("{verb} '{}': {}", path.display(), os_reason(error))
}

/// The operating system's reason without Rust's `(os error N)` suffix.
fn os_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The names of a directory's entries (not their paths), sorted so that a listing is the same
/// on every run.
fn read_dir(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        names.push(os_bytes(entry?.file_name()));
    }
    names.sort();
    Ok(names)
}

#[cfg(unix)]
fn os_bytes(name: std::ffi::OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStringExt;
    name.into_vec()
}

#[cfg(not(unix))]
fn os_bytes(name: std::ffi::OsString) -> Vec<u8> {
    name.to_string_lossy().into_owned().into_bytes()
}

fn write(path: &Path, bytes: &[u8], append: bool) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .append(append)
        .truncate(!append)
        .open(path)?;
    file.write_all(bytes)
}

/// Moves or copies `from` to `to` (a directory with everything in it), refusing to replace
/// what is at `to` unless `overwrite`.
fn transfer(from: &Path, to: &Path, overwrite: bool, copying: bool) -> io::Result<()> {
    let source = std::fs::symlink_metadata(from)?;
    if std::fs::symlink_metadata(to).is_ok() {
        if !overwrite {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the target exists (pass true as the third argument to replace it)",
            ));
        }
        if std::fs::metadata(to)?.is_dir() {
            std::fs::remove_dir_all(to)?;
        } else {
            std::fs::remove_file(to)?;
        }
    }
    if !copying {
        return std::fs::rename(from, to);
    }
    if source.is_dir() {
        copy_dir(from, to)
    } else {
        std::fs::copy(from, to).map(drop)
    }
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// `kind` (`"file"`, `"dir"` or `"symlink"`), `exists`, `size` (files only), `createdAt`,
/// `modifiedAt`, `accessedAt` (seconds since the Unix epoch, nil where the system does not
/// say) and `permissions.readOnly`.
fn metadata_table(lua: &Lua, meta: &std::fs::Metadata) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    let kind = meta.file_type();
    let kind = if kind.is_symlink() {
        "symlink"
    } else if kind.is_dir() {
        "dir"
    } else {
        "file"
    };
    table.raw_set("kind", kind)?;
    table.raw_set("exists", true)?;
    table.raw_set("size", meta.is_file().then_some(meta.len() as f64))?;
    table.raw_set("createdAt", seconds(meta.created()))?;
    table.raw_set("modifiedAt", seconds(meta.modified()))?;
    table.raw_set("accessedAt", seconds(meta.accessed()))?;
    let permissions = lua.create_table()?;
    permissions.raw_set("readOnly", meta.permissions().readonly())?;
    table.raw_set("permissions", permissions)?;
    Ok(table)
}

fn seconds(time: io::Result<SystemTime>) -> Option<f64> {
    let since = time.ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(since.as_secs_f64())
}
