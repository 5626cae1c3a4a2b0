//! What watching a workspace costs per block, on a 10,000-file git repository (100 directories of
//! 100 source files, a `.gitignore`, and a `target/` of 5,000 build files that is summarised, not
//! walked): the system calls alone (the floor), one snapshot; the before + after pair around a
//! block that changes nothing and one that edits a file; and the first snapshot of a session,
//! which also reads the text it keeps for line counts.

use std::path::Path;
use std::process::Command;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use proctor::workspace::snapshot::{GitView, WalkOptions, walk};
use proctor::workspace::{ChangeTracker, HostTracker};

const DIRS: usize = 100;
const FILES_PER_DIR: usize = 100;

fn build_tree(root: &Path) {
    for d in 0..DIRS {
        let dir = root.join(format!("src/mod_{d:03}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..FILES_PER_DIR {
            let text: String = (0..40)
                .map(|l| format!("def f_{d}_{f}_{l}(x):\n    return x + {l}\n"))
                .collect();
            std::fs::write(dir.join(format!("file_{f:03}.py")), text).expect("write");
        }
    }
    std::fs::write(root.join(".gitignore"), "*.log\n/build/\n").expect("gitignore");
    let target = root.join("target/debug/deps");
    std::fs::create_dir_all(&target).expect("target");
    for i in 0..5000 {
        std::fs::write(target.join(format!("lib{i}.rlib")), "x").expect("write");
    }
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(args)
            .current_dir(root)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git")
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A", "src", ".gitignore"]);
}

fn workspace(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    build_tree(dir.path());
    let root = dir.path().to_path_buf();
    let opts = WalkOptions::default();

    let mut group = c.benchmark_group("workspace_10k_files");
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(6));

    // The floor: listing every directory and lstat-ing every file, nothing else (what any walk of
    // this tree pays in system calls), skipping `.git` and `target` as the snapshot does.
    fn list_and_stat(dir: &Path) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let m = e.metadata().expect("lstat");
            if m.is_dir() {
                if e.file_name() != ".git" && e.file_name() != "target" {
                    n += list_and_stat(&e.path());
                }
            } else {
                n += 1;
            }
        }
        n
    }
    group.bench_function("readdir_and_lstat_only", |b| {
        b.iter(|| assert_eq!(list_and_stat(&root), DIRS * FILES_PER_DIR + 1))
    });

    let mut view = GitView::default();
    let snap = walk(&root, &opts, &mut view).expect("walk");
    assert_eq!(snap.files.len(), DIRS * FILES_PER_DIR + 1);
    group.bench_function("snapshot", |b| {
        b.iter(|| walk(&root, &opts, &mut view).expect("walk"))
    });

    let mut tracker = HostTracker::new(&root, opts.clone());
    tracker.before().expect("before");
    tracker.after().expect("after");
    group.bench_function("before_and_after_nothing_changed", |b| {
        b.iter(|| {
            tracker.before().expect("before");
            let d = tracker.after().expect("after");
            assert!(d.no_file_changed());
        })
    });

    let edited = root.join("src/mod_050/file_050.py");
    let mut n = 0u64;
    group.bench_function("before_and_after_one_file_edited", |b| {
        b.iter(|| {
            tracker.before().expect("before");
            n += 1;
            let mut text = std::fs::read_to_string(&edited).expect("read");
            text.push_str(&format!("# edit {n}\n"));
            std::fs::write(&edited, text).expect("write");
            let d = tracker.after().expect("after");
            assert_eq!(d.modified.len(), 1);
        })
    });

    group.bench_function("first_snapshot_of_a_session", |b| {
        b.iter_batched(
            || HostTracker::new(&root, opts.clone()),
            |mut t| t.before().expect("before"),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, workspace);
criterion_main!(benches);
