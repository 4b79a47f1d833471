//! Heap profiles for etcd's `--enable-pprof`: a global allocator wrapper
//! that, once a member runs with the flag, records the stack of about one
//! allocation per 512 KiB allocated (Go's default rate, each byte equally
//! likely) and forgets it when freed. A profile is the live and the
//! cumulative sampled allocations by stack. Without the flag the wrapper
//! costs one relaxed load per allocation and free.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Mutex;

use crate::proto::profile::{Frame, HeapResponse, HeapSample};

/// Go's MemProfileRate: one sample per this many bytes on average.
pub const RATE: u64 = 512 * 1024;
/// Frames kept of a sampled stack.
const DEPTH: usize = 64;

/// The allocator wrapper each daemon installs around mimalloc.
pub struct Sampling<A>(pub A);

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Start sampling (at start, with `--enable-pprof`).
pub fn activate() {
    ACTIVE.store(true, Ordering::Relaxed);
}

thread_local! {
    /// Bytes left until this thread's next sample.
    static UNTIL: Cell<i64> = const { Cell::new(0) };
    /// This thread's random state for the sampling intervals.
    static SEED: Cell<u64> = const { Cell::new(0) };
    /// Set while this thread records a sample: its own allocations then
    /// go unsampled (and unchecked on free).
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// An exponentially distributed interval with mean `RATE` (so every byte
/// is equally likely to be sampled, as Go samples).
fn next_interval() -> i64 {
    SEED.with(|s| {
        let mut x = s.get();
        if x == 0 {
            x = (s as *const Cell<u64> as u64) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        // Uniform in (0, 1], then -ln(u) * RATE.
        let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        (-u.ln() * RATE as f64) as i64
    })
}

/// Live sampled allocations by address, and what was ever sampled.
struct Table {
    live: HashMap<usize, (u64, Vec<usize>)>,
    total: HashMap<Vec<usize>, (u64, u64)>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);
/// How many live samples hash to each slot: a free looks up the table
/// only when its slot is not zero.
static SLOTS: [AtomicU16; 1 << 16] = [const { AtomicU16::new(0) }; 1 << 16];

fn slot(addr: usize) -> &'static AtomicU16 {
    let h = (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48;
    &SLOTS[h as usize]
}

fn record(addr: usize, size: u64) {
    let mut stack = Vec::with_capacity(DEPTH);
    // SAFETY: trace_unsynchronized walks this thread's own stack; BUSY keeps
    // the walk's allocations (if any) from sampling again.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            stack.push(frame.ip() as usize);
            stack.len() < DEPTH
        });
    }
    let Ok(mut table) = TABLE.lock() else {
        return;
    };
    let table = table.get_or_insert_with(|| Table {
        live: HashMap::new(),
        total: HashMap::new(),
    });
    let total = table.total.entry(stack.clone()).or_insert((0, 0));
    total.0 += 1;
    total.1 += size;
    if table.live.insert(addr, (size, stack)).is_none() {
        slot(addr).fetch_add(1, Ordering::Relaxed);
    }
}

fn forget(addr: usize) {
    let Ok(mut table) = TABLE.lock() else {
        return;
    };
    if let Some(t) = table.as_mut() {
        if t.live.remove(&addr).is_some() {
            slot(addr).fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Whether sampling runs: checked inline before any other work.
#[inline(always)]
fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

#[cold]
fn on_alloc(ptr: *mut u8, size: usize) {
    if ptr.is_null() {
        return;
    }
    let left = UNTIL.with(|u| {
        let left = u.get() - size as i64;
        u.set(left);
        left
    });
    if left > 0 || BUSY.with(Cell::get) {
        return;
    }
    UNTIL.with(|u| u.set(next_interval()));
    BUSY.with(|b| b.set(true));
    record(ptr as usize, size as u64);
    BUSY.with(|b| b.set(false));
}

#[cold]
fn on_free(ptr: *mut u8) {
    if slot(ptr as usize).load(Ordering::Relaxed) == 0 {
        return;
    }
    if BUSY.with(Cell::get) {
        return;
    }
    BUSY.with(|b| b.set(true));
    forget(ptr as usize);
    BUSY.with(|b| b.set(false));
}

// SAFETY: every call is passed on to the wrapped allocator unchanged; the
// sampling around it only reads the pointers.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Sampling<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { self.0.alloc(layout) };
        if active() {
            on_alloc(ptr, layout.size());
        }
        ptr
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if active() {
            on_alloc(ptr, layout.size());
        }
        ptr
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if active() {
            on_free(ptr);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let sampling = active();
        if sampling {
            on_free(ptr);
        }
        // SAFETY: the caller's contract, passed on.
        let moved = unsafe { self.0.realloc(ptr, layout, new_size) };
        if sampling {
            on_alloc(moved, new_size);
        }
        moved
    }
}

/// Go's unsampling: what `count` samples of `bytes` stand for.
fn scale(count: u64, bytes: u64) -> (i64, i64) {
    if count == 0 {
        return (0, 0);
    }
    let avg = bytes as f64 / count as f64;
    let factor = 1.0 / (1.0 - (-avg / RATE as f64).exp());
    (
        (count as f64 * factor) as i64,
        (bytes as f64 * factor) as i64,
    )
}

/// This process's heap profile, symbolized (the allocator's own frames
/// left out).
pub fn snapshot() -> HeapResponse {
    let was_busy = BUSY.with(|b| b.replace(true));
    let (live, total) = match TABLE.lock() {
        Ok(t) => match t.as_ref() {
            Some(t) => {
                let mut live: HashMap<Vec<usize>, (u64, u64)> = HashMap::new();
                for (size, stack) in t.live.values() {
                    let e = live.entry(stack.clone()).or_insert((0, 0));
                    e.0 += 1;
                    e.1 += size;
                }
                (live, t.total.clone())
            }
            None => Default::default(),
        },
        Err(_) => Default::default(),
    };
    BUSY.with(|b| b.set(was_busy));
    let mut symbols: HashMap<usize, Vec<Frame>> = HashMap::new();
    let mut samples = Vec::with_capacity(total.len());
    for (stack, (count, bytes)) in &total {
        let (alloc_objects, alloc_space) = scale(*count, *bytes);
        let (live_count, live_bytes) = live.get(stack).copied().unwrap_or((0, 0));
        let (inuse_objects, inuse_space) = scale(live_count, live_bytes);
        let mut frames = Vec::new();
        for ip in stack {
            let resolved = symbols.entry(*ip).or_insert_with(|| resolve(*ip));
            frames.extend(resolved.iter().cloned());
        }
        // The sampler's and the allocator's frames say nothing.
        let first_own = frames
            .iter()
            .rposition(|f| {
                f.name.contains("heap_profile::")
                    || f.name.contains("__rust_alloc")
                    || f.name.contains("__rdl_alloc")
                    || f.name.contains("__rg_alloc")
            })
            .map_or(0, |i| i + 1);
        samples.push(HeapSample {
            frames: frames.split_off(first_own.min(frames.len())),
            values: vec![alloc_objects, alloc_space, inuse_objects, inuse_space],
        });
    }
    HeapResponse { samples }
}

fn resolve(ip: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    backtrace::resolve(ip as *mut std::ffi::c_void, |s| {
        let name = s.name().map(|n| n.to_string()).unwrap_or_default();
        frames.push(Frame {
            system_name: name.clone(),
            name,
            file: s
                .filename()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            line: i64::from(s.lineno().unwrap_or(0)),
        });
    });
    if frames.is_empty() {
        frames.push(Frame {
            name: format!("{ip:#x}"),
            system_name: String::new(),
            file: String::new(),
            line: 0,
        });
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsampling_scales_small_allocations_up() {
        assert_eq!(scale(0, 0), (0, 0));
        // A 512 KiB allocation is sampled with probability 1 - 1/e.
        let (objects, _) = scale(100, 100 * RATE);
        assert!((157..=159).contains(&objects), "{objects}");
        let (objects, bytes) = scale(1, 64);
        assert!(objects > 8000 && bytes > 8000 * 64, "{objects} {bytes}");
    }

    #[test]
    fn intervals_average_the_rate() {
        let n = 20_000;
        let mean: f64 = (0..n).map(|_| next_interval() as f64).sum::<f64>() / n as f64;
        assert!((mean - RATE as f64).abs() < RATE as f64 * 0.05, "{mean}");
    }
}
