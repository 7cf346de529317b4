//! Refuses a statement too complex for the recursive code before anything builds a tree of it.
//!
//! sqlparser parses a flat chain (`c OR c OR …`, `1+1+…`, `'a'||'a'||…`, `x::text::text…`)
//! iteratively into a left-deep tree, as deep as the chain is long; the planner, the evaluator,
//! `Clone`, `PartialEq`, `Display` and `Drop` then recurse once per level. In a debug build one
//! planner level takes about 15 KiB of stack (measured: a chain of 135 terms is the longest a
//! 2 MiB thread survives), so a few hundred terms abort the daemon. This guard runs first, over
//! sqlparser's tokenizer (iterative), and estimates the depth of the tree the parser would build:
//!
//! * operators are grouped by sqlparser's PostgreSQL precedence; within a stretch of the text free
//!   of lower-precedence operators, operators of one class chain into one left-deep spine. The
//!   depth of a flat expression is at most the sum, over the classes, of the longest such run;
//! * a parenthesized (or bracketed) group is one term of the expression around it: it adds its
//!   own depth plus one;
//! * commas separate list items (select items, arguments, `IN` lists), which do not stack.
//!
//! The estimate never falls below the real depth, and stays close to it for the shapes people
//! write (`a = 1 OR a = 2 OR …` counts one per `OR` plus one for the `=`).

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::{state, SqlError};

/// The deepest tree a statement may make (see the module docs: 135 levels is where a debug
/// build's 2 MiB thread overflows; release builds take several times more).
pub const MAX_DEPTH: usize = 64;

/// Operator classes, loosest first (sqlparser's PostgreSQL precedences).
const CLASSES: usize = 15;

fn class(t: &Token) -> Option<usize> {
    Some(match t {
        Token::Word(w) => match w.keyword {
            Keyword::OR => 0,
            Keyword::XOR => 7,
            Keyword::AND => 1,
            Keyword::NOT => 2,
            Keyword::IS => 3,
            Keyword::IN
            | Keyword::LIKE
            | Keyword::ILIKE
            | Keyword::SIMILAR
            | Keyword::BETWEEN
            | Keyword::OVERLAPS
            | Keyword::ESCAPE => 5,
            Keyword::OPERATOR => 6,
            Keyword::AT => 11,
            Keyword::COLLATE => 12,
            _ => return None,
        },
        Token::Eq | Token::DoubleEq | Token::Neq | Token::Lt | Token::Gt | Token::LtEq | Token::GtEq => 4,
        Token::Plus | Token::Minus => 8,
        Token::Mul | Token::Div | Token::DuckIntDiv | Token::Mod => 9,
        Token::Caret => 10,
        Token::LBracket => 13,
        Token::DoubleColon => 14,
        // not operators
        Token::EOF
        | Token::Number(..)
        | Token::Char(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::EscapedStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::Whitespace(_)
        | Token::Comma
        | Token::Period
        | Token::SemiColon
        | Token::LParen
        | Token::RParen
        | Token::RBracket
        | Token::LBrace
        | Token::RBrace
        | Token::Placeholder(_) => return None,
        // `||`, `~`, `@>`, `->` and the other operators PostgreSQL puts between comparison and `+`
        _ => 6,
    })
}

/// One parenthesis level: the runs of its current list item, and the deepest item so far.
#[derive(Default)]
struct Level {
    run: [usize; CLASSES],
    longest: [usize; CLASSES],
    /// The deepest group inside the current item.
    inner: usize,
    /// The deepest finished item.
    best: usize,
}

impl Level {
    fn operator(&mut self, c: usize) {
        self.run[c] += 1;
        self.longest[c] = self.longest[c].max(self.run[c]);
        // a looser operator ends the tighter classes' runs
        for r in &mut self.run[c + 1..] {
            *r = 0;
        }
    }

    fn item_depth(&self) -> usize {
        self.longest.iter().sum::<usize>() + self.inner
    }

    fn end_item(&mut self) {
        self.best = self.best.max(self.item_depth());
        *self = Level {
            best: self.best,
            ..Level::default()
        };
    }

    fn depth(&self) -> usize {
        self.best.max(self.item_depth())
    }
}

fn too_complex(what: String) -> SqlError {
    SqlError::new(state::STATEMENT_TOO_COMPLEX, format!("statement too complex: {what}")).hint(format!(
        "a statement may nest or chain operators at most {MAX_DEPTH} deep: list alternatives with IN ('a', 'b', ...) rather than OR, or split the statement"
    ))
}

/// The estimated depth of the deepest statement of `sql`; a tokenizer error is a syntax error.
pub fn depth(sql: &str) -> Result<usize, SqlError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| SqlError::new(state::SYNTAX_ERROR, format!("syntax error: {e}")))?;
    let mut deepest = 0;
    let mut levels = vec![Level::default()];
    for t in &tokens {
        if let Some(c) = class(t) {
            if let Some(l) = levels.last_mut() {
                l.operator(c);
            }
        }
        match t {
            Token::LParen | Token::LBracket | Token::LBrace => levels.push(Level::default()),
            Token::RParen | Token::RBracket | Token::RBrace if levels.len() > 1 => {
                let group = levels.pop().map_or(0, |l| l.depth() + 1);
                if let Some(l) = levels.last_mut() {
                    l.inner = l.inner.max(group);
                }
            }
            Token::Comma => {
                if let Some(l) = levels.last_mut() {
                    l.end_item();
                }
            }
            Token::SemiColon => {
                // statements do not stack; unclosed groups count as closed
                deepest = deepest.max(close_all(&mut levels));
            }
            _ => {}
        }
    }
    Ok(deepest.max(close_all(&mut levels)))
}

fn close_all(levels: &mut Vec<Level>) -> usize {
    while levels.len() > 1 {
        let group = levels.pop().map_or(0, |l| l.depth() + 1);
        if let Some(outer) = levels.last_mut() {
            outer.inner = outer.inner.max(group);
        }
    }
    let top = levels.pop().map_or(0, |l| l.depth());
    levels.push(Level::default());
    top
}

/// Refuses `sql` with `54001` when its tree could be deeper than [`MAX_DEPTH`].
pub fn check(sql: &str) -> Result<(), SqlError> {
    let d = depth(sql)?;
    if d > MAX_DEPTH {
        return Err(too_complex(format!(
            "its operators chain or nest about {d} deep, more than {MAX_DEPTH}"
        )));
    }
    Ok(())
}
