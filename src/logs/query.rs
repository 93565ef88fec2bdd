//! The query parameters of `GET /logs` and `GET /logs/stream`, checked into
//! typed values with one clear sentence per mistake, and the opaque paging
//! cursor.
//!
//! The cursor names the position of the last log of a page in the order
//! (received_at desc, _id desc). The next page is "strictly after that
//! position", which does not move when newer votes arrive, so paging never
//! repeats or skips an old log. It is opaque (base64url) so clients pass it
//! back rather than build it.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Serialize, Serializer};

use super::error::LogsError;
use crate::log_entry::ItemKey;
use crate::schema::mongo::LogDocument;
use crate::vote::{Problem, Route, text};

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 500;
/// Longer than any cursor this app hands out; refuses huge junk before decoding it.
const MAX_CURSOR_CHARS: usize = 512;

/// Exact-match filters on a log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub band: Option<String>,
    pub album: Option<String>,
    pub route: Option<Route>,
}

impl Filter {
    pub fn matches(&self, item: &ItemKey) -> bool {
        self.band.as_ref().is_none_or(|band| *band == item.band)
            && self.album.as_ref().is_none_or(|album| *album == item.album)
            && self.route.is_none_or(|route| route.as_str() == item.route)
    }
}

/// A checked `GET /logs` request.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    pub limit: usize,
    pub filter: Filter,
    pub before: Option<Cursor>,
}

/// A position in the order (received_at desc, _id desc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub received_at_ms: i64,
    pub id: String,
}

impl Cursor {
    /// The position of a log: its `_id` (the record's position in Kafka),
    /// not the vote id it shows, which a duplicate shares.
    pub fn of(log: &LogDocument) -> Cursor {
        Cursor {
            received_at_ms: log.received_at.timestamp_millis(),
            id: log.id.clone(),
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.received_at_ms, self.id))
    }

    pub fn decode(text: &str) -> Result<Cursor, LogsError> {
        let malformed = || {
            LogsError::bad_request(
                "before: not a cursor from this API; pass the \"next\" value of the previous page unchanged",
            )
        };
        if text.len() > MAX_CURSOR_CHARS {
            return Err(malformed());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed())?;
        let plain = String::from_utf8(bytes).map_err(|_| malformed())?;
        let (millis, id) = plain.split_once(':').ok_or_else(malformed)?;
        let received_at_ms = millis.parse::<i64>().map_err(|_| malformed())?;
        if id.is_empty() {
            return Err(malformed());
        }
        Ok(Cursor {
            received_at_ms,
            id: id.to_owned(),
        })
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

const PAGE_PARAMS: &[&str] = &["limit", "band", "album", "route", "before"];
const STREAM_PARAMS: &[&str] = &["band", "album", "route"];

/// Checks the parameters of `GET /logs`.
pub fn page(params: &[(String, String)]) -> Result<LogQuery, LogsError> {
    let params = known(params, PAGE_PARAMS, "/logs")?;
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                LogsError::bad_request(format!(
                    "limit: must be a whole number from 1 to {MAX_LIMIT}, got {raw:?}"
                ))
            })?,
    };
    let before = params.get("before").map(|raw| Cursor::decode(raw)).transpose()?;
    Ok(LogQuery {
        limit,
        filter: filter(&params)?,
        before,
    })
}

/// Checks the parameters of `GET /logs/stream`.
pub fn stream(params: &[(String, String)]) -> Result<Filter, LogsError> {
    filter(&known(params, STREAM_PARAMS, "/logs/stream")?)
}

/// The parameters as a map, refusing unknown and repeated names (a typo such
/// as `?bnd=` would otherwise silently return everything). An empty value
/// counts as absent, as an empty field of an HTML form means "any".
fn known<'a>(
    params: &'a [(String, String)],
    accepted: &[&str],
    endpoint: &str,
) -> Result<HashMap<&'a str, &'a str>, LogsError> {
    let mut map = HashMap::new();
    for (name, value) in params {
        if !accepted.contains(&name.as_str()) {
            return Err(LogsError::bad_request(format!(
                "unknown parameter {name:?}; {endpoint} accepts {}",
                accepted.join(", ")
            )));
        }
        if map.insert(name.as_str(), value.as_str()).is_some() {
            return Err(LogsError::bad_request(format!(
                "parameter {name:?} is given more than once"
            )));
        }
    }
    map.retain(|_, value| !value.is_empty());
    Ok(map)
}

fn filter(params: &HashMap<&str, &str>) -> Result<Filter, LogsError> {
    let route = match params.get("route").copied() {
        None => None,
        Some(name) => match Route::ALL.into_iter().find(|route| route.as_str() == name) {
            Some(route) => Some(route),
            None => {
                return Err(LogsError::bad_request(format!(
                    "route: must be grpc or http, got {name:?}"
                )));
            }
        },
    };
    Ok(Filter {
        band: name(params, "band")?,
        album: name(params, "album")?,
        route,
    })
}

/// A band or album to match exactly. Votes are stored trimmed and free of
/// control characters, so a name is checked by the votes' own rules
/// ([`crate::vote::text`]); an empty one means no filter. A NUL would also make
/// the MongoDB query itself fail.
fn name(params: &HashMap<&str, &str>, field: &'static str) -> Result<Option<String>, LogsError> {
    let Some(raw) = params.get(field) else {
        return Ok(None);
    };
    match text(field, raw) {
        Ok(name) => Ok(Some(name)),
        Err(e) if e.problem == Problem::Empty => Ok(None),
        Err(e) => Err(LogsError::bad_request(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn message(result: Result<LogQuery, LogsError>) -> String {
        result.expect_err("should be refused").to_string()
    }

    #[test]
    fn no_parameters_mean_the_newest_twenty_of_everything() {
        let query = page(&[]).unwrap();
        assert_eq!(
            query,
            LogQuery {
                limit: 20,
                filter: Filter::default(),
                before: None
            }
        );
    }

    #[test]
    fn filters_are_trimmed_and_an_empty_value_means_any() {
        let query = page(&params(&[("band", "  Alux Nahual "), ("album", ""), ("route", "grpc")])).unwrap();
        assert_eq!(query.filter.band.as_deref(), Some("Alux Nahual"));
        assert_eq!(query.filter.album, None);
        assert_eq!(query.filter.route, Some(Route::Grpc));
    }

    #[test]
    fn limits_outside_one_to_five_hundred_are_refused_with_the_range() {
        for bad in ["0", "501", "10000", "abc", "-1", "2.5"] {
            let msg = message(page(&params(&[("limit", bad)])));
            assert!(msg.contains("limit: must be a whole number from 1 to 500"), "{msg}");
            assert!(msg.contains(bad), "{msg}");
        }
        assert_eq!(page(&params(&[("limit", "500")])).unwrap().limit, 500);
        assert_eq!(page(&params(&[("limit", "1")])).unwrap().limit, 1);
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert!(message(page(&params(&[("bnd", "x")]))).contains("unknown parameter \"bnd\""));
        assert!(message(page(&params(&[("limit", "5"), ("limit", "6")]))).contains("more than once"));
        assert!(stream(&params(&[("limit", "5")])).is_err());
    }

    #[test]
    fn a_route_other_than_grpc_or_http_is_refused() {
        assert!(message(page(&params(&[("route", "ftp")]))).contains("route: must be grpc or http"));
    }

    #[test]
    fn names_with_control_characters_or_too_long_are_refused() {
        assert!(message(page(&params(&[("band", "a\u{0}b")]))).contains("control characters"));
        let long = "x".repeat(101);
        assert!(message(page(&params(&[("album", &long)]))).contains("at most 100 characters"));
    }

    #[test]
    fn a_cursor_survives_the_round_trip_even_with_colons_in_the_id() {
        for cursor in [
            Cursor {
                received_at_ms: 1_764_182_400_123,
                id: "0196f2a4-7c3e-7d1a-9f00-000000000001".into(),
            },
            Cursor {
                received_at_ms: -5,
                id: "a:b:c".into(),
            },
        ] {
            let text = cursor.encode();
            assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert_eq!(Cursor::decode(&text).unwrap(), cursor);
        }
    }

    #[test]
    fn malformed_cursors_are_refused_with_a_hint() {
        let not_a_number = URL_SAFE_NO_PAD.encode("soon:abc");
        let no_id = URL_SAFE_NO_PAD.encode("123:");
        let no_colon = URL_SAFE_NO_PAD.encode("123");
        let huge = "A".repeat(600);
        for bad in [
            "%%%",
            "!!",
            not_a_number.as_str(),
            no_id.as_str(),
            no_colon.as_str(),
            huge.as_str(),
        ] {
            let msg = Cursor::decode(bad).unwrap_err().to_string();
            assert!(msg.contains("before: not a cursor"), "{bad}: {msg}");
        }
    }

    // Hostile input: any parameters or cursor text give a value or a 400,
    // never a panic; a cursor the app hands out reads back unchanged.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_query_parameters_give_a_query_or_a_bad_request(
            params in proptest::collection::vec(
                (proptest::prop_oneof![
                    proptest::strategy::Just("limit".to_owned()),
                    proptest::strategy::Just("band".to_owned()),
                    proptest::strategy::Just("route".to_owned()),
                    proptest::strategy::Just("before".to_owned()),
                    ".{0,8}",
                ], ".{0,60}"),
                0..6,
            )
        ) {
            let _ = page(&params);
            let _ = stream(&params);
        }

        #[test]
        fn any_cursor_text_is_a_cursor_or_a_bad_request(text in ".{0,200}") {
            let _ = Cursor::decode(&text);
        }

        #[test]
        fn a_cursor_the_app_hands_out_reads_back_unchanged(received_at_ms in proptest::prelude::any::<i64>(), id in ".{1,60}") {
            let cursor = Cursor { received_at_ms, id };
            proptest::prop_assert_eq!(Cursor::decode(&cursor.encode()).ok(), Some(cursor));
        }
    }
}
