//! Tie expressions: arithmetic over numbers and parameter paths, e.g. `model_dim / 64` or
//! `2 * blocks[0].heads`. Operators `+ - * /` and `//` (floor division), parentheses, unary minus.

use crate::path::ParamPath;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Path(String),
    Op(char),
    FloorDiv,
    Open,
    Close,
}

fn tokenize(src: &str) -> Result<Vec<Token>, String> {
    let mut out = vec![];
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1
            }
            ')' => {
                out.push(Token::Close);
                i += 1
            }
            '/' if chars.get(i + 1) == Some(&'/') => {
                out.push(Token::FloorDiv);
                i += 2
            }
            '+' | '-' | '*' | '/' => {
                out.push(Token::Op(c));
                i += 1
            }
            c if c.is_ascii_digit() || c == '.' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_digit()
                        || chars[i] == '.'
                        || chars[i] == 'e'
                        || ((chars[i] == '-' || chars[i] == '+') && chars[i - 1] == 'e'))
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                out.push(Token::Num(
                    s.parse().map_err(|_| format!("bad number {s:?}"))?,
                ));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                let mut depth = 0;
                while i < chars.len() {
                    let d = chars[i];
                    if d == '[' {
                        depth += 1;
                    } else if d == ']' {
                        depth -= 1;
                    } else if depth == 0 && !(d.is_ascii_alphanumeric() || d == '_' || d == '.') {
                        break;
                    }
                    i += 1;
                }
                out.push(Token::Path(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    doc: &'a Value,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn expr(&mut self) -> Result<f64, String> {
        let mut v = self.term()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.peek().cloned() {
            self.pos += 1;
            let r = self.term()?;
            v = if op == '+' { v + r } else { v - r };
        }
        Ok(v)
    }

    fn term(&mut self) -> Result<f64, String> {
        let mut v = self.factor()?;
        loop {
            match self.peek() {
                Some(Token::Op('*')) => {
                    self.pos += 1;
                    v *= self.factor()?;
                }
                Some(Token::Op('/')) => {
                    self.pos += 1;
                    v /= self.factor()?;
                }
                Some(Token::FloorDiv) => {
                    self.pos += 1;
                    v = (v / self.factor()?).floor();
                }
                _ => return Ok(v),
            }
        }
    }

    fn factor(&mut self) -> Result<f64, String> {
        let t = self.peek().cloned().ok_or("expression ends early")?;
        self.pos += 1;
        match t {
            Token::Num(n) => Ok(n),
            Token::Op('-') => Ok(-self.factor()?),
            Token::Open => {
                let v = self.expr()?;
                if self.peek() != Some(&Token::Close) {
                    return Err("missing `)`".into());
                }
                self.pos += 1;
                Ok(v)
            }
            Token::Path(p) => {
                let path = ParamPath::parse(&p)?;
                path.get(self.doc)?
                    .as_f64()
                    .ok_or_else(|| format!("{p} is not a number"))
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

/// Evaluates `src` against a model JSON. Integral results become JSON integers.
pub fn evaluate(src: &str, doc: &Value) -> Result<Value, String> {
    let mut p = Parser {
        tokens: tokenize(src)?,
        pos: 0,
        doc,
    };
    let v = p
        .expr()
        .map_err(|e| format!("in tie expression {src:?}: {e}"))?;
    if p.pos != p.tokens.len() {
        return Err(format!(
            "in tie expression {src:?}: unexpected trailing input"
        ));
    }
    if !v.is_finite() {
        return Err(format!("tie expression {src:?} is not finite ({v})"));
    }
    Ok(crate::points::number(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arithmetic_and_paths() {
        let doc = json!({"model_dim": 256, "training": {"lr": 0.002}, "blocks": [{"heads": 4}]});
        assert_eq!(evaluate("model_dim / 64", &doc).unwrap(), json!(4));
        assert_eq!(
            evaluate("2 * (blocks[0].heads + 1) - 3", &doc).unwrap(),
            json!(7)
        );
        assert_eq!(evaluate("model_dim // 3", &doc).unwrap(), json!(85));
        assert_eq!(evaluate("training.lr * 0.5", &doc).unwrap(), json!(0.001));
        assert_eq!(evaluate("-1e-3 * -2", &doc).unwrap(), json!(0.002));
        assert!(evaluate("model_dim / ", &doc).is_err());
        assert!(
            evaluate("missing_key + 1", &doc)
                .unwrap_err()
                .contains("not set")
        );
    }
}
