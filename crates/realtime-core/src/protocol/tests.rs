//! Tests of the wire protocol's decoding and encoding.

use super::*;
use serde_json::json;

fn decode(v: &str) -> Result<Command, ProtocolError> {
    decode_command(v, Topic::MAX_LEN)
}

#[test]
fn decodes_each_command() {
    assert_eq!(
        decode(r#"{"action":"subscribe","topic":"order:123","ref":"1"}"#).unwrap(),
        Command::Subscribe {
            topic: Topic::parse("order:123").unwrap(),
            since: None,
            reference: Some(json!("1"))
        }
    );
    assert!(matches!(
        decode(r#"{"action":"unsubscribe","topic":"a"}"#),
        Ok(Command::Unsubscribe {
            reference: None,
            ..
        })
    ));
    assert!(matches!(
        decode(r#"{"action":"ping","ref":4}"#),
        Ok(Command::Ping { reference: Some(_) })
    ));
    let Command::Publish { message, .. } =
            decode(r#"{"action":"publish","topic":"chat:lobby","message":{"type":"chat","text":"hi"},"ref":"3"}"#).unwrap()
        else {
            panic!("expected publish")
        };
    assert_eq!(message.get("text"), Some(&json!("hi")));
    assert_eq!(
        decode(r#"{"action":"refresh","token":"a.b.c","ref":"r"}"#).unwrap(),
        Command::Refresh {
            token: "a.b.c".into(),
            reference: Some(json!("r"))
        }
    );
}

#[test]
fn decodes_positions_and_history() {
    let Command::Subscribe { since, .. } =
        decode(r#"{"action":"subscribe","topic":"t","since":{"offset":17,"epoch":"E"},"ref":"2"}"#)
            .unwrap()
    else {
        panic!("expected subscribe")
    };
    assert_eq!(
        since,
        Some(Position {
            offset: 17,
            epoch: "E".into()
        })
    );
    assert_eq!(
        decode(r#"{"action":"history","topic":"t","limit":5,"ref":"3"}"#).unwrap(),
        Command::History {
            topic: Topic::parse("t").unwrap(),
            since: None,
            limit: Some(5),
            reference: Some(json!("3"))
        }
    );
    for bad in [
        r#"{"action":"subscribe","topic":"t","since":5,"ref":"r"}"#,
        r#"{"action":"subscribe","topic":"t","since":{"offset":-1,"epoch":"E"},"ref":"r"}"#,
        r#"{"action":"subscribe","topic":"t","since":{"offset":1},"ref":"r"}"#,
        r#"{"action":"subscribe","topic":"t","since":{"offset":1.5,"epoch":"E"},"ref":"r"}"#,
        r#"{"action":"history","topic":"t","limit":"9","ref":"r"}"#,
        r#"{"action":"history","topic":"t","limit":-3,"ref":"r"}"#,
    ] {
        let e = decode(bad).unwrap_err();
        assert_eq!(
            (e.code, e.reference),
            (ErrorCode::BadRequest, Some(json!("r"))),
            "{bad}"
        );
    }
    let long = format!(
        r#"{{"action":"subscribe","topic":"t","since":{{"offset":1,"epoch":"{}"}}}}"#,
        "e".repeat(MAX_EPOCH_LEN + 1)
    );
    assert_eq!(decode(&long).unwrap_err().code, ErrorCode::BadRequest);
}

#[test]
fn decodes_presence_commands() {
    assert_eq!(
        decode(r#"{"action":"presence","topic":"room:1","ref":"1"}"#).unwrap(),
        Command::Presence {
            topic: Topic::parse("room:1").unwrap(),
            limit: None,
            cursor: None,
            reference: Some(json!("1"))
        }
    );
    assert_eq!(
        decode(r#"{"action":"presence","topic":"t","ref":2,"limit":7,"cursor":"abc"}"#).unwrap(),
        Command::Presence {
            topic: Topic::parse("t").unwrap(),
            limit: Some(7),
            cursor: Some("abc".into()),
            reference: Some(json!(2))
        }
    );
    // The range is the engine's to check: 0 decodes.
    assert!(matches!(
        decode(r#"{"action":"presence","topic":"t","limit":0,"cursor":null}"#),
        Ok(Command::Presence {
            limit: Some(0),
            cursor: None,
            ..
        })
    ));
    assert_eq!(
        decode(r#"{"action":"presence_stats","topic":"t","ref":"2"}"#).unwrap(),
        Command::PresenceStats {
            topic: Topic::parse("t").unwrap(),
            reference: Some(json!("2"))
        }
    );
    for (bad, code) in [
        (
            r#"{"action":"presence","topic":"t","limit":"5","ref":"r"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"action":"presence","topic":"t","limit":-1,"ref":"r"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"action":"presence","topic":"t","cursor":5,"ref":"r"}"#,
            ErrorCode::BadRequest,
        ),
        (r#"{"action":"presence","ref":"r"}"#, ErrorCode::BadRequest),
        (
            r#"{"action":"presence","topic":"a b","ref":"r"}"#,
            ErrorCode::InvalidTopic,
        ),
        (
            r#"{"action":"presence_stats","topic":7,"ref":"r"}"#,
            ErrorCode::BadRequest,
        ),
        (
            r#"{"action":"presence_stats","topic":"","ref":"r"}"#,
            ErrorCode::InvalidTopic,
        ),
    ] {
        let e = decode(bad).unwrap_err();
        assert_eq!((e.code, e.reference), (code, Some(json!("r"))), "{bad}");
    }
    assert_eq!(ErrorCode::NoPresence.as_str(), "no_presence");
    assert_eq!(json!(ErrorCode::NoPresence), json!("no_presence"));
}

#[test]
fn presence_frames_serialize_as_documented() {
    let r = json!("1");
    let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let users = RawValue::from_string(
            json!([{"user_id":"42","connections":[{"connection_id":id,"connected_at":"t","info":{"name":"Ann"}}]}])
                .to_string(),
        )
        .unwrap();
    let f = ServerFrame::Presence {
        topic: "t",
        reference: Some(&r),
        users: &users,
        cursor: Some("c"),
        degraded: false,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"presence","topic":"t","ref":"1","users":[{"user_id":"42","connections":[{"connection_id":id,"connected_at":"t","info":{"name":"Ann"}}]}],"cursor":"c"})
    );
    let empty = RawValue::from_string("[]".into()).unwrap();
    let f = ServerFrame::Presence {
        topic: "t",
        reference: None,
        users: &empty,
        cursor: None,
        degraded: true,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"presence","topic":"t","users":[],"degraded":true})
    );
    let f = ServerFrame::PresenceStats {
        topic: "t",
        reference: Some(&r),
        connections: 3,
        users: 2,
        degraded: false,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"presence_stats","topic":"t","ref":"1","connections":3,"users":2})
    );
    let f = ServerFrame::PresenceStats {
        topic: "t",
        reference: None,
        connections: 0,
        users: 0,
        degraded: true,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap()["degraded"],
        true
    );
    let f = ServerFrame::Join {
        topic: "t",
        user_id: "42",
        connection_id: id,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"join","topic":"t","user_id":"42","connection_id":id.to_string()})
    );
    let f = ServerFrame::Leave {
        topic: "t",
        user_id: "42",
        connection_id: id,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"leave","topic":"t","user_id":"42","connection_id":id.to_string()})
    );
}

#[test]
fn errors_carry_stable_codes_and_the_ref() {
    let cases: &[(&str, ErrorCode, Option<Value>)] = &[
        ("nope", ErrorCode::BadRequest, None),
        ("[1,2]", ErrorCode::BadRequest, None),
        (r#"{"ref":"9"}"#, ErrorCode::BadRequest, Some(json!("9"))),
        (
            r#"{"action":5,"ref":"9"}"#,
            ErrorCode::BadRequest,
            Some(json!("9")),
        ),
        (
            r#"{"action":"dance","ref":"9"}"#,
            ErrorCode::UnknownAction,
            Some(json!("9")),
        ),
        (
            r#"{"action":"subscribe","ref":"9"}"#,
            ErrorCode::BadRequest,
            Some(json!("9")),
        ),
        (
            r#"{"action":"subscribe","topic":7}"#,
            ErrorCode::BadRequest,
            None,
        ),
        (
            r#"{"action":"subscribe","topic":"a b","ref":1}"#,
            ErrorCode::InvalidTopic,
            Some(json!(1)),
        ),
        (
            r#"{"action":"subscribe","topic":""}"#,
            ErrorCode::InvalidTopic,
            None,
        ),
        (
            r#"{"action":"publish","topic":"a"}"#,
            ErrorCode::BadRequest,
            None,
        ),
        (
            r#"{"action":"publish","topic":"a","message":"hi"}"#,
            ErrorCode::BadRequest,
            None,
        ),
        (
            r#"{"action":"publish","topic":"a","message":{"text":"hi"}}"#,
            ErrorCode::BadRequest,
            None,
        ),
        (
            r#"{"action":"ping","ref":{"x":1}}"#,
            ErrorCode::BadRequest,
            None,
        ),
        (
            r#"{"action":"refresh","ref":2}"#,
            ErrorCode::BadRequest,
            Some(json!(2)),
        ),
        (
            r#"{"action":"refresh","token":7}"#,
            ErrorCode::BadRequest,
            None,
        ),
        (
            r#"{"action":"refresh","token":""}"#,
            ErrorCode::BadRequest,
            None,
        ),
    ];
    for (input, code, reference) in cases {
        let e = decode(input).unwrap_err();
        assert_eq!(e.code, *code, "{input}");
        assert_eq!(&e.reference, reference, "{input}");
    }
}

#[test]
fn peek_reference_reads_only_a_valid_ref() {
    assert_eq!(
        peek_reference(r#"{"action":"ping","ref":"a"}"#),
        Some(json!("a"))
    );
    assert_eq!(
        peek_reference(r#"{"ref":5,"x":[1,{"y":2}]}"#),
        Some(json!(5))
    );
    assert_eq!(peek_reference(r#"{"ref":{"x":1}}"#), None);
    assert_eq!(peek_reference(r#"[1]"#), None);
    assert_eq!(peek_reference("nope"), None);
    assert_eq!(
        peek_reference(r#"{"ref":1,"ref":2}"#),
        Some(json!(2)),
        "the last wins"
    );
    assert_eq!(peek_reference(r#"{"ref":1} trailing"#), None);
}

#[test]
fn deep_nesting_is_a_bad_request_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(decode(&deep).unwrap_err().code, ErrorCode::BadRequest);
}

#[test]
fn frames_serialize_as_documented() {
    let r = json!("1");
    let f = ServerFrame::Subscribed {
        topic: "order:123",
        reference: Some(&r),
        offset: None,
        epoch: None,
        recovered: None,
        reason: None,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"subscribed","topic":"order:123","ref":"1"})
    );
    let f = ServerFrame::Subscribed {
        topic: "t",
        reference: Some(&r),
        offset: Some(20),
        epoch: Some("E"),
        recovered: Some(false),
        reason: Some(Unrecoverable::Trimmed),
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"subscribed","topic":"t","ref":"1","offset":20,"epoch":"E","recovered":false,"reason":"trimmed"})
    );
    let publications = vec![
        serde_json::value::RawValue::from_string(r#"{"offset":3,"epoch":"E","type":"n"}"#.into())
            .unwrap(),
    ];
    let f = ServerFrame::History {
        topic: "t",
        reference: Some(&r),
        publications: &publications,
        offset: 3,
        epoch: "E",
        recovered: None,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"history","topic":"t","ref":"1","publications":[{"offset":3,"epoch":"E","type":"n"}],"offset":3,"epoch":"E"})
    );
    let f = ServerFrame::Missed {
        topic: "t",
        reason: MissedReason::BusReconnected,
        offset: None,
        epoch: None,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"missed","topic":"t","reason":"bus_reconnected"})
    );
    let f = ServerFrame::Published {
        reference: None,
        delivered: 2,
        relayed: false,
        offset: None,
        epoch: None,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap(),
        json!({"type":"published","delivered":2,"relayed":false})
    );
    let e = ProtocolError::new(Some(json!(7)), ErrorCode::Forbidden, "no");
    assert_eq!(
        serde_json::from_str::<Value>(&e.frame().to_json()).unwrap(),
        json!({"type":"error","ref":7,"code":"forbidden","message":"no"})
    );
    let f = ServerFrame::ServerShutdown {
        message: "bye",
        timestamp: "t",
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.to_json()).unwrap()["type"],
        "server-shutdown"
    );
}
