//! JSON input: a line that is a JSON object has its fields kept; anything else (a parse error, a
//! bare string or number) is shipped raw by the caller and counted as invalid.

use serde_json::{Map, Value};

pub fn parse(line: &[u8]) -> Option<Box<Map<String, Value>>> {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(map)) => Some(Box::new(map)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parse_and_everything_else_does_not() {
        let m = parse(br#"{"level":"warn","n":3}"#).expect("object");
        assert_eq!(m["level"], "warn");
        assert!(parse(b"not json").is_none());
        assert!(parse(b"42").is_none());
        assert!(parse(br#"{"open": "#).is_none());
    }
}
