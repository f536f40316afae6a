//! Shell-style globs for subscription filters: `*` matches any run of characters (including
//! `/`, so `team/*` covers nested folders), `?` one character, `[abc]`, `[a-z]` and `[!abc]` one
//! character of (or not of) a set; `\` makes the next character literal. Matching is on whole
//! strings and case-sensitive, like branch and job names.

/// A parsed glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    Star,
    Set {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

impl Glob {
    /// Parses a glob; refuses an empty one and an unclosed `[`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a glob must not be empty".into());
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '\\' => match chars.next() {
                    Some(n) => tokens.push(Token::Literal(n)),
                    None => return Err(format!("glob {text:?} ends with a lone '\\'")),
                },
                '[' => {
                    let negated = matches!(chars.peek(), Some('!') | Some('^'));
                    if negated {
                        chars.next();
                    }
                    let mut items = Vec::new();
                    let mut closed = false;
                    let mut first = true;
                    while let Some(c) = chars.next() {
                        // A `]` first in the set is a literal, as in shells.
                        if c == ']' && !first {
                            closed = true;
                            break;
                        }
                        first = false;
                        if chars.peek() == Some(&'-') {
                            let mut ahead = chars.clone();
                            ahead.next();
                            match ahead.peek() {
                                Some(&hi) if hi != ']' => {
                                    chars.next();
                                    chars.next();
                                    items.push((c, hi));
                                    continue;
                                }
                                _ => {}
                            }
                        }
                        items.push((c, c));
                    }
                    if !closed {
                        return Err(format!("glob {text:?} has a '[' without its ']'"));
                    }
                    tokens.push(Token::Set { negated, items });
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the whole of `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        let chars: Vec<char> = s.chars().collect();
        // Iterative matching with one backtrack point per star: linear in practice, never
        // exponential (a hostile glob cannot stall the writer).
        let (mut t, mut i) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while i < chars.len() {
            match self.tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t, i));
                    t += 1;
                    continue;
                }
                Some(tok) if one(tok, chars[i]) => {
                    t += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((st, si)) => {
                    t = st + 1;
                    i = si + 1;
                    star = Some((st, si + 1));
                }
                None => return false,
            }
        }
        self.tokens[t..].iter().all(|tok| *tok == Token::Star)
    }
}

fn one(tok: &Token, c: char) -> bool {
    match tok {
        Token::Literal(l) => *l == c,
        Token::Any => true,
        Token::Set { negated, items } => {
            items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
        }
        Token::Star => false,
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, s: &str) -> bool {
        Glob::parse(glob).unwrap().matches(s)
    }

    #[test]
    fn stars_questions_and_sets() {
        assert!(m("main", "main"));
        assert!(!m("main", "main2"));
        assert!(m("release/*", "release/1.2"));
        assert!(m("release/*", "release/1/hotfix"));
        assert!(!m("release/*", "releases/1"));
        assert!(m("*deploy*", "team/deploy-prod"));
        assert!(m("build-?", "build-a"));
        assert!(!m("build-?", "build-ab"));
        assert!(m("v[0-9].*", "v1.2"));
        assert!(!m("v[!0-9]*", "v1"));
        assert!(m("v[!0-9]*", "vx"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*", ""));
        assert!(m("a*b*c", "aXbYc"));
        assert!(!m("a*b*c", "aXbY"));
        assert!(m("[]]", "]"));
        assert!(m("[a-]", "-"));
    }

    #[test]
    fn bad_globs_are_refused() {
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("[abc").is_err());
        assert!(Glob::parse("a\\").is_err());
    }

    #[test]
    fn many_stars_stay_fast() {
        let g = Glob::parse(&"*a".repeat(30)).unwrap();
        let s = "a".repeat(29) + "b";
        let start = std::time::Instant::now();
        assert!(!g.matches(&s.repeat(20)));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
