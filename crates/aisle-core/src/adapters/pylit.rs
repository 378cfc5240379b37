//! A parser for the small subset of Python literals that Flipkart's CSV export contains:
//! strings, lists, dicts, numbers, `True`, `False` and `None`.

/// A parsed Python literal.
#[derive(Clone, Debug, PartialEq)]
pub enum PyValue {
    Str(String),
    Num(String),
    Bool(bool),
    None,
    List(Vec<PyValue>),
    Dict(Vec<(PyValue, PyValue)>),
}

impl PyValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) | PyValue::Num(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a dict with string keys.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// How deeply lists and dicts may nest: Flipkart's literals nest 2 deep, and the parser (and the
/// drop of what it returns) recurses once per level, so a deeper literal is refused rather than
/// allowed to overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// Parses a whole literal; `Err` says what was expected at which character.
pub fn parse(text: &str) -> Result<PyValue, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut p = Parser {
        s: &chars,
        i: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != chars.len() {
        return Err(format!(
            "unexpected text after the literal at character {}",
            p.i + 1
        ));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
    /// Lists and dicts open around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{c}` at character {}", self.i + 1))
        }
    }

    fn value(&mut self) -> Result<PyValue, String> {
        self.ws();
        if matches!(self.peek(), Some('[' | '(' | '{')) && self.depth >= MAX_DEPTH {
            return Err(format!(
                "nested more than {MAX_DEPTH} deep at character {}",
                self.i + 1
            ));
        }
        match self.peek() {
            Some('\'') | Some('"') => self.string().map(PyValue::Str),
            Some('[') => self.nested(|p| p.seq(']').map(PyValue::List)),
            Some('(') => self.nested(|p| p.seq(')').map(PyValue::List)),
            Some('{') => self.nested(Self::dict),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'))
                {
                    self.i += 1;
                }
                Ok(PyValue::Num(self.s[start..self.i].iter().collect()))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    self.i += 1;
                }
                let word: String = self.s[start..self.i].iter().collect();
                match word.as_str() {
                    "True" => Ok(PyValue::Bool(true)),
                    "False" => Ok(PyValue::Bool(false)),
                    "None" => Ok(PyValue::None),
                    _ => Err(format!(
                        "unexpected name `{word}` at character {}",
                        start + 1
                    )),
                }
            }
            Some(c) => Err(format!("unexpected `{c}` at character {}", self.i + 1)),
            None => Err("unexpected end of text".into()),
        }
    }

    /// Parses a list or dict one level deeper.
    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<PyValue, String>,
    ) -> Result<PyValue, String> {
        self.depth += 1;
        let v = parse(self);
        self.depth -= 1;
        v
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.s[self.i];
        let start = self.i;
        self.i += 1;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == quote {
                return Ok(out);
            }
            if c == '\\' {
                let Some(e) = self.peek() else { break };
                self.i += 1;
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
            } else {
                out.push(c);
            }
        }
        Err(format!(
            "unterminated string starting at character {}",
            start + 1
        ))
    }

    fn seq(&mut self, close: char) -> Result<Vec<PyValue>, String> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok(items);
            }
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(',') => self.i += 1,
                Some(c) if c == close => {}
                _ => {
                    return Err(format!(
                        "expected `,` or `{close}` at character {}",
                        self.i + 1
                    ))
                }
            }
        }
    }

    fn dict(&mut self) -> Result<PyValue, String> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some('}') {
                self.i += 1;
                return Ok(PyValue::Dict(items));
            }
            let k = self.value()?;
            self.expect(':')?;
            let v = self.value()?;
            items.push((k, v));
            self.ws();
            match self.peek() {
                Some(',') => self.i += 1,
                Some('}') => {}
                _ => return Err(format!("expected `,` or `}}` at character {}", self.i + 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_category_trees_and_specs() {
        let v = parse("['footwear', \"women's footwear\", 'a\\'b']").expect("list");
        assert_eq!(
            v,
            PyValue::List(vec![
                PyValue::Str("footwear".into()),
                PyValue::Str("women's footwear".into()),
                PyValue::Str("a'b".into()),
            ])
        );
        let v = parse("[{'key': 'Color', 'value': 'Red'}, {'value': 'One Pair'}]").expect("dicts");
        let PyValue::List(items) = v else {
            panic!("list")
        };
        assert_eq!(items[0].get("key").and_then(PyValue::as_str), Some("Color"));
        assert_eq!(items[1].get("key"), None);
        assert_eq!(parse("[1, 2.5, True, None]").map(|_| ()), Ok(()));
    }

    #[test]
    fn reports_errors() {
        assert!(parse("['a', 'b'").is_err());
        assert!(parse("['a' 'b']").is_err());
        assert!(parse("['unterminated]").is_err());
        assert!(parse("[x]").is_err());
        assert!(parse("[] tail").is_err());
    }

    #[test]
    fn refuses_deep_nesting_instead_of_overflowing_the_stack() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let err = parse(&deep).expect_err("too deep");
        assert!(err.contains("nested more than 64 deep"), "{err}");
        assert!(parse(&"[{(".repeat(100_000)).is_err());
    }
}
