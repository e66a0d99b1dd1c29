//! Helpers for the in-process tests (plain `cargo test`, nothing outside Rust): bare repos made
//! with git2. Each test file uses its own subset.
#![allow(dead_code)]

use std::path::Path;

/// A bare repo at `dir` with one commit on `main` holding `files`.
pub fn bare_repo(dir: &Path, files: &[(&str, &str)]) -> git2::Repository {
    let repo = git2::Repository::init_bare(dir).expect("init");
    let mut index = git2::Index::new().expect("index");
    for (path, content) in files {
        let blob = repo.blob(content.as_bytes()).expect("blob");
        index
            .add(&index_entry(path, blob, 0o100_644, content.len()))
            .expect("add");
    }
    let tree = index.write_tree_to(&repo).expect("tree");
    let tree = repo.find_tree(tree).expect("find tree");
    let sig = git2::Signature::now("test", "test@example.com").expect("sig");
    repo.commit(Some("refs/heads/main"), &sig, &sig, "init", &tree, &[])
        .expect("commit");
    drop(tree);
    repo
}

/// An index entry for blob `id` at `path` with git `mode` (`0o100_644` a file, `0o120_000` a
/// symlink whose blob holds its target).
pub fn index_entry(path: &str, id: git2::Oid, mode: u32, size: usize) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: u32::try_from(size).expect("small"),
        id,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

pub fn file_at_main(repo: &git2::Repository, path: &str) -> String {
    let head = repo
        .find_reference("refs/heads/main")
        .and_then(|r| r.peel_to_commit())
        .expect("main");
    let entry = head
        .tree()
        .expect("tree")
        .get_path(Path::new(path))
        .expect("entry");
    let blob = repo.find_blob(entry.id()).expect("blob");
    String::from_utf8_lossy(blob.content()).into_owned()
}
