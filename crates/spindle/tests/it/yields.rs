//! Who owns a yield: a plain `coroutine.yield` belongs to whoever resumed the thread, a
//! scheduler yield (`task.wait`, an async function) to the scheduler; and the coroutine library
//! as scripts see it (contract rule 11).

mod coroutine_library;
