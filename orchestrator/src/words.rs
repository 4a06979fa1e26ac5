//! Small helpers for the words in messages a person reads.

/// Quotes `s` for a POSIX shell (batch scripts, and commands a message suggests): `'...'`, with each `'` written as `'\''`. Strings made only of
/// characters no shell treats specially are returned as they are.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,%@+".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `n` and `noun`, plural unless `n` is 1: `count(1, "run")` is "1 run", `count(3, "run")` "3 runs".
pub fn count(n: usize, noun: &str) -> String {
    count_as(n, noun, &format!("{noun}s"))
}

/// [`count`] for a noun whose plural is not `noun` + "s": `count_as(2, "library", "libraries")`
/// is "2 libraries".
pub fn count_as(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!([0, 1, 2].map(|n| super::count(n, "run")), ["0 runs", "1 run", "2 runs"]);
        assert_eq!([1, 2].map(|n| super::count_as(n, "library", "libraries")), ["1 library", "2 libraries"]);
    }
}
