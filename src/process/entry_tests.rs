//! Tests of [`super`]: entry round trips, panics, codec failures, build ids.
//! No `unsafe` here: entries are resolved through the safe
//! `entry_and_trampoline` helper of the parent module.

use super::*;
use serde::Serializer;

/// The entry and resolved trampoline of `f`, with `F` inferred from a
/// value as `submit(f, arg)` does.
fn entry_for<F, A, R>(_: F) -> (u64, Trampoline)
where
    F: Fn(A) -> R + Copy + Send + 'static,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    entry_and_trampoline::<F, A, R>()
}

/// Runs a resolved trampoline on `arg` and decodes its result.
fn call<A: Serialize, R: DeserializeOwned>(
    (_, t): (u64, Trampoline),
    arg: &A,
) -> Result<R, RemoteError> {
    let out = t(&codec::encode(arg).unwrap())?;
    Ok(codec::decode(&out).unwrap())
}

fn double(x: u64) -> u64 {
    x * 2
}

fn boom_str(_: u8) -> u8 {
    panic!("boom as a &str")
}

fn boom_string(n: u8) -> u8 {
    panic!("boom number {n}")
}

fn boom_other(_: u8) -> u8 {
    std::panic::panic_any(42_i32)
}

#[test]
fn fn_item_round_trips_through_entry_and_resolve() {
    let e = entry_for(double);
    assert_eq!(call::<u64, u64>(e, &21), Ok(42));
    assert_eq!(e.0, entry_for(double).0, "stable within a process");
}

#[test]
fn non_capturing_closure_round_trips() {
    let greet = |name: String| format!("hello, {name}");
    let e = entry_for(greet);
    assert_eq!(
        call::<_, String>(e, &"py".to_string()),
        Ok("hello, py".into())
    );
    let sum = |v: Vec<i64>| -> (usize, i64) { (v.len(), v.iter().sum()) };
    assert_eq!(
        call::<_, (usize, i64)>(entry_for(sum), &vec![1, 2, 3]),
        Ok((3, 6))
    );
    assert_ne!(entry_for(greet).0, entry_for(sum).0);
}

#[test]
fn resolve_gives_back_the_same_function() {
    let (e, t) = entry_for(double);
    assert_eq!(offset_from_anchor(t as *const u8), e);
    // Offsets are relative: not the absolute address.
    assert_ne!(e, t as *const u8 as usize as u64);
}

#[test]
fn panics_become_panicked_with_the_message() {
    // Generic, not `fn(u8) -> u8`: a fn pointer is not zero-sized and
    // would be (rightly) refused at compile time.
    fn msg<F: Fn(u8) -> u8 + Copy + Send + 'static>(f: F) -> String {
        match call::<u8, u8>(entry_for(f), &1) {
            Err(RemoteError::Panicked { message, .. }) => message,
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
    assert_eq!(msg(boom_str), "boom as a &str");
    assert_eq!(msg(boom_string), "boom number 1");
    assert!(msg(boom_other).contains("non-string"));
    // The thread that ran them is fine and runs the next task.
    assert_eq!(call::<u64, u64>(entry_for(double), &4), Ok(8));
}

#[test]
fn bad_argument_bytes_give_decode_naming_the_type() {
    let (_, t) = entry_for(double);
    for bad in [&[][..], &[0xFF; 11], &[1, 2]] {
        match t(bad) {
            Err(RemoteError::Decode { type_name, .. }) => assert_eq!(type_name, "u64"),
            other => panic!("{bad:?}: expected Decode, got {other:?}"),
        }
    }
}

/// A result type whose `Serialize` fails, and an argument type whose
/// `Deserialize` panics.
#[derive(Deserialize)]
struct NoEncode;
impl Serialize for NoEncode {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot encode this"))
    }
}
#[derive(Serialize)]
struct PanicsOnDecode;
impl<'de> Deserialize<'de> for PanicsOnDecode {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("decode exploded")
    }
}

#[test]
fn encode_failure_and_decode_panic_are_per_task_errors_of_their_kind() {
    let e = entry_for(|_: u8| NoEncode);
    match call::<u8, NoEncode>(e, &0) {
        Err(RemoteError::Encode { type_name, message }) => {
            assert!(type_name.ends_with("NoEncode"));
            assert!(message.contains("Serialize impl"), "{message}");
        }
        Err(other) => panic!("expected Encode, got {other:?}"),
        Ok(_) => panic!("expected Encode, got Ok"),
    }
    // A panic in the argument's `Deserialize` is that argument's decode
    // error (D12), not the task's panic.
    let e = entry_for(|_: PanicsOnDecode| 0u8);
    assert!(matches!(
        call::<_, u8>(e, &PanicsOnDecode),
        Err(RemoteError::Decode { type_name, message })
            if type_name.ends_with("PanicsOnDecode") && message.contains("decode exploded")
    ));
}

#[test]
fn recorded_backtrace_travels_with_the_panic() {
    // What the worker hook does, done by the task itself so that no
    // process-global hook is installed in the test binary.
    let e = entry_for(|_: u8| -> u8 {
        record_backtrace(&Backtrace::force_capture());
        panic!("with a trace")
    });
    match call::<u8, u8>(e, &0) {
        Err(RemoteError::Panicked {
            backtrace: Some(bt),
            ..
        }) => assert!(!bt.is_empty()),
        other => panic!("expected a backtrace, got {other:?}"),
    }
    // A later panic without one does not report the stale trace.
    assert!(matches!(
        call::<u8, u8>(entry_for(boom_str), &0),
        Err(RemoteError::Panicked {
            backtrace: None,
            ..
        })
    ));
}

#[test]
fn build_id_is_stable_and_round_trips() {
    let id = BuildId::current();
    assert_eq!(id, BuildId::current());
    assert_eq!(id.protocol, PROTOCOL_VERSION);
    assert_ne!(id.probe_offset, 0);
    #[cfg(target_os = "linux")]
    assert!(id.exe.is_some_and(|e| e.len > 0 && e.ino != 0));
    let back: BuildId = codec::decode(&codec::encode(&id).unwrap()).unwrap();
    assert_eq!(back, id);
    id.check_peer(&back).unwrap();
}

#[test]
fn a_different_build_is_refused_with_the_reason() {
    let ours = BuildId::current();
    let mut theirs = ours;
    theirs.exe = theirs.exe.map(|e| ExeStamp {
        len: e.len + 1,
        ..e
    });
    theirs.probe_offset ^= 0x40;
    let Err(Error::Protocol(msg)) = ours.check_peer(&theirs) else {
        panic!("expected a refusal");
    };
    assert!(msg.contains("not the same build"), "{msg}");
    assert!(
        msg.contains("code layout") && msg.contains("executable"),
        "{msg}"
    );
    assert!(!msg.contains("protocol:"), "{msg}");
}

#[test]
fn fnv1a_matches_reference_values() {
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
}

/// Env var that turns [`child_resolves_an_entry_from_its_parent`] from a
/// no-op into the child half of [`an_entry_resolves_in_a_fresh_process`].
const CHILD_ENTRY: &str = "CF_PROCESS_ENTRY_TEST_ENTRY";

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The real thing: the entry made here is resolved and run by a new
/// process of the same test executable, loaded at its own (ASLR) base,
/// after the same build-id check a worker does.
#[test]
fn an_entry_resolves_in_a_fresh_process() {
    let (entry, _) = entry_for(double);
    let build = to_hex(&codec::encode(&BuildId::current()).unwrap());
    let child_test = format!(
        "{}::child_resolves_an_entry_from_its_parent",
        module_path!().split_once("::").unwrap().1
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            child_test.as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENTRY, format!("{entry}:{build}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints the test name on the same line, before our output.
    let (_, rest) = stdout
        .split_once("CHILD-RESULT=")
        .unwrap_or_else(|| panic!("no result in: {stdout}"));
    let hex = rest.split_whitespace().next().unwrap();
    assert_eq!(codec::decode::<u64>(&from_hex(hex)).unwrap(), 42);
}

/// Child half of [`an_entry_resolves_in_a_fresh_process`]; passes
/// trivially when run on its own.
#[test]
fn child_resolves_an_entry_from_its_parent() {
    let Ok(spec) = std::env::var(CHILD_ENTRY) else {
        return;
    };
    let (entry, build) = spec.split_once(':').unwrap();
    let parent: BuildId = codec::decode(&from_hex(build)).unwrap();
    BuildId::current().check_peer(&parent).unwrap();
    let t = resolve_checked(entry.parse().unwrap(), &parent);
    let out = t(&codec::encode(&21u64).unwrap()).unwrap();
    println!("CHILD-RESULT={}", to_hex(&out));
}
