//! text, select, number, checkbox, email, phone.

use serde_json::json;

use super::{bad, err, ok};

#[test]
fn text_and_select_keep_their_string_verbatim() {
    assert_eq!(ok("text", json!("Blue and gold")), json!("Blue and gold"));
    assert_eq!(
        ok("text", json!("  Bleu et or, 青と金 ✨ ")),
        json!("  Bleu et or, 青と金 ✨ ")
    );
    assert_eq!(ok("text", json!("")), json!(""));
    assert_eq!(ok("select", json!("option_b")), json!("option_b"));
    assert_eq!(bad("text", json!(42)), err("", "type"));
    assert_eq!(bad("select", json!(["option_a", "option_b"])), err("", "type"));
}

#[test]
fn numbers_and_checkboxes_keep_their_json_kind() {
    assert_eq!(ok("number", json!(42)), json!(42));
    assert_eq!(ok("number", json!(-0.5)), json!(-0.5));
    assert_eq!(ok("number", json!(u64::MAX)), json!(u64::MAX));
    assert_eq!(bad("number", json!("42")), err("", "type"));
    assert_eq!(ok("checkbox", json!(true)), json!(true));
    assert_eq!(ok("checkbox", json!(false)), json!(false));
    assert_eq!(bad("checkbox", json!("true")), err("", "type"));
    assert_eq!(bad("checkbox", json!(1)), err("", "type"));
}

#[test]
fn an_email_is_trimmed_with_a_lower_case_domain_and_its_local_part_kept() {
    assert_eq!(ok("email", json!("a@b.example")), json!("a@b.example"));
    assert_eq!(
        ok("email", json!("  Jane.Doe+wedding@Example.CO.UK ")),
        json!("Jane.Doe+wedding@example.co.uk")
    );
    assert_eq!(
        ok("email", json!("zoë@bücher.example")),
        json!("zoë@bücher.example")
    );
    assert_eq!(ok("email", json!("x@ÉXAMPLE.com")), json!("x@éxample.com"));
}

#[test]
fn malformed_emails_are_email_syntax_errors() {
    for text in [
        "",
        "jane",
        "jane@",
        "@example.com",
        "jane@example",
        "jane@@example.com",
        "jane@ex@ample.com",
        "jane doe@example.com",
        "jane@.example.com",
        "jane@example..com",
        "jane@example.com.",
    ] {
        assert_eq!(bad("email", json!(text)), err("", "email_syntax"), "{text}");
    }
    let long = format!("{}@example.com", "a".repeat(250));
    assert_eq!(bad("email", json!(long)), err("", "email_syntax"));
    assert_eq!(bad("email", json!(["a@b.example"])), err("", "type"));
}

#[test]
fn phones_become_e164() {
    for (text, e164) in [
        ("+447700900123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("+44-7700-900-123", "+447700900123"),
        ("0044 7700 900123", "+447700900123"),
        ("+1 (212) 555-0123", "+12125550123"),
        ("+12345678", "+12345678"),
        ("+123456789012345", "+123456789012345"),
    ] {
        assert_eq!(ok("phone", json!(text)), json!(e164), "{text}");
    }
}

#[test]
fn phones_without_an_international_prefix_or_with_a_wrong_digit_count_are_errors() {
    for text in [
        "07700 900123",
        "447700900123",
        "+44 12",
        "+1234567",
        "+1234567890123456",
        "+44 7700 900123 ext 4",
        "+44.7700.900123",
        "+04477009001",
        "+",
        "",
    ] {
        assert_eq!(bad("phone", json!(text)), err("", "e164_phone"), "{text}");
    }
    assert_eq!(bad("phone", json!(447700900123u64)), err("", "type"));
}
