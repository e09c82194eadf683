use eipgw::model::{Request, State};
use std::time::Instant;
fn main() {
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
    sizes();
    let n: u32 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let doc = eipgw_tests::scale::associations_document(n);
    let text = doc.strip_prefix(r#"{"requests":"#).unwrap().strip_suffix("}").unwrap().to_string();
    drop(doc);
    let t = Instant::now();
    let mut requests: Vec<Request> = serde_json::from_str(&text).unwrap();
    eprintln!("parse {:?}", t.elapsed());
    if std::env::var_os("SHUFFLE").is_some() {
        // The associations (the last n requests) in a fixed random order.
        let len = requests.len();
        let tail = &mut requests[len - n as usize..];
        let mut x: u64 = 0x2545F4914F6CDD1D;
        for i in (1..tail.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            tail.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    let mut state = State::default();
    state
        .run_all(
            &serde_json::from_str::<Vec<Request>>(r#"[{"op":"create_region","id":"local"}]"#)
                .unwrap(),
        )
        .unwrap();
    let t = Instant::now();
    let (done, change) = state.run_all(&requests).unwrap();
    eprintln!("rules {:?} changed {}", t.elapsed(), change.len());
    let t = Instant::now();
    drop(done);
    eprintln!("drop executed {:?}", t.elapsed());
    let t = Instant::now();
    drop(requests);
    eprintln!("drop requests {:?}", t.elapsed());
    if std::env::var_os("SPIKE").is_some() {
        let middle = eipgw_tests::scale::eip(n / 2);
        for op in ["unassociate_eip", "release_eip"] {
            let request: Request =
                serde_json::from_str(&format!(r#"{{"op":"{op}","eip":"{middle}"}}"#)).unwrap();
            let t = Instant::now();
            state.run(&request).unwrap();
            eprintln!("{op} of the middle EIP {:?}", t.elapsed());
            let t = Instant::now();
            state.run(&request).ok();
            eprintln!("{op} again {:?}", t.elapsed());
        }
        return;
    }
    if std::env::var_os("REVERT").is_some() {
        let t = Instant::now();
        state.revert(&change);
        eprintln!("revert {:?}", t.elapsed());
        return;
    }
    if std::env::var_os("NOSTORE").is_some() {
        return;
    }
    let dir = std::path::Path::new("/tmp/applyprof-store");
    let _ = std::fs::remove_dir_all(dir);
    let store = eipgw::store::Store::open(dir).unwrap();
    let t = Instant::now();
    store.commit(&state, &change).unwrap();
    eprintln!("store {:?}", t.elapsed());
    let t = Instant::now();
    drop(change);
    eprintln!("drop change {:?}", t.elapsed());
}
#[allow(dead_code)]
fn sizes() {
    use eipgw::model::*;
    eprintln!(
        "Request {} Resource {} Eip {} Key {} Executed {} Eni {}",
        size_of::<Request>(),
        size_of::<Resource>(),
        size_of::<Eip>(),
        size_of::<Key>(),
        size_of::<Executed>(),
        size_of::<Eni>()
    );
}
