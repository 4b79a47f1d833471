//! The repository speaks only of triad: no tracked file narrates how it
//! was built (numbered issues or sessions) or points at files outside the
//! repository, every Rust file opens with the `//!` line that says what it
//! owns, and no member data is committed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_path_buf()
}

/// Every file git tracks (or would add) in the repository.
fn tracked() -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(root())
        .output()
        .expect("git (the tidy checks read the repository's file list)");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|p| root().join(p).is_file())
        .collect()
}

/// A word followed by a space and a digit, at a word start.
fn numbered(line: &str, word: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find(word) {
        let start = from + at;
        let before_ok = start == 0 || !lower.as_bytes()[start - 1].is_ascii_alphanumeric();
        let rest = &lower.as_bytes()[start + word.len()..];
        if before_ok && rest.first() == Some(&b' ') && rest.get(1).is_some_and(u8::is_ascii_digit) {
            return true;
        }
        from = start + word.len();
    }
    false
}

#[test]
fn nothing_narrates_the_development_or_points_outside() {
    // Built from parts, so this file does not match itself.
    let outside = ["..", "/shared"].concat();
    let brief = ["BRIEF", ".md"].concat();
    let mut found = Vec::new();
    for path in tracked() {
        let Ok(text) = std::fs::read_to_string(root().join(&path)) else {
            continue; // binary
        };
        for (n, line) in text.lines().enumerate() {
            let bad = line.contains(&outside)
                || line.contains(&brief)
                || numbered(line, "issue")
                || numbered(line, "session")
                || numbered(line, "sessions");
            if bad {
                found.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn every_rust_file_says_what_it_owns() {
    let missing: Vec<String> = tracked()
        .into_iter()
        .filter(|p| p.ends_with(".rs"))
        .filter(|p| {
            let text = std::fs::read_to_string(root().join(p)).unwrap_or_default();
            !text.starts_with("//!")
        })
        .collect();
    assert!(missing.is_empty(), "no //! line: {missing:?}");
}

#[test]
fn no_member_data_is_committed() {
    let data: Vec<String> = tracked()
        .into_iter()
        .filter(|p| {
            p.split('/')
                .any(|part| part.ends_with(".triad") || part == "triad-data")
                || p.ends_with(".jnl")
        })
        .collect();
    assert!(data.is_empty(), "member data in the repository: {data:?}");
}

#[test]
fn numbered_words_are_found_only_before_numbers() {
    // Built from parts, so this file does not match itself.
    let numbered_issue = ["issue", " 3"].concat();
    assert!(numbered(&["see Issue", " 27 for"].concat(), "issue"));
    assert!(numbered(&numbered_issue, "issue"));
    assert!(!numbered("an issue with 3 parts", "issue"));
    assert!(!numbered(&["tissue", " 3"].concat(), "issue"));
    assert!(!numbered("sessions", "session"));
}
