//! Phonebook exports desk phones and other systems fetch: vCard 4.0 (RFC 6350), and the remote
//! XML phonebooks of Yealink (`YealinkIPPhoneDirectory`) and Snom (`SnomIPPhoneDirectory`), each
//! `DirectoryEntry` with a `Name` and its `Telephone` numbers. Only directory people and shared
//! contacts are exported (a user's own contacts are theirs), and only valid numbers.

use std::fmt::Write;

use super::model::{Contact, Source};

fn exported(c: &Contact) -> bool {
    !matches!(c.source, Source::Personal { .. }) && c.phones.iter().any(|p| p.e164.is_some())
}

/// vCard text value escaping (RFC 6350 §3.4).
fn vescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' => out.push_str("\\;"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends a content line, folded at 75 octets (RFC 6350 §3.2) without splitting a character.
fn line(out: &mut String, text: &str) {
    let mut count = 0;
    for ch in text.chars() {
        let n = ch.len_utf8();
        if count + n > 75 {
            out.push_str("\r\n ");
            count = 1;
        }
        out.push(ch);
        count += n;
    }
    out.push_str("\r\n");
}

pub fn vcard(contacts: &[impl AsRef<Contact>]) -> String {
    let mut out = String::new();
    for c in contacts.iter().map(AsRef::as_ref).filter(|c| exported(c)) {
        line(&mut out, "BEGIN:VCARD");
        line(&mut out, "VERSION:4.0");
        line(&mut out, &format!("FN:{}", vescape(c.name.as_deref().unwrap_or("?"))));
        line(
            &mut out,
            &format!(
                "N:{};{};;;",
                vescape(c.family_name.as_deref().unwrap_or("")),
                vescape(c.given_name.as_deref().unwrap_or(""))
            ),
        );
        if let Some(org) = &c.organization {
            let dept = c.department.as_deref().map(|d| format!(";{}", vescape(d))).unwrap_or_default();
            line(&mut out, &format!("ORG:{}{dept}", vescape(org)));
        }
        if let Some(t) = &c.title {
            line(&mut out, &format!("TITLE:{}", vescape(t)));
        }
        for p in &c.phones {
            let Some(e) = &p.e164 else { continue };
            let kind = match p.kind.as_deref() {
                Some("mobile" | "workMobile") => "cell",
                Some("home") => "home",
                Some("homeFax" | "workFax" | "otherFax") => "fax",
                Some("pager" | "workPager") => "pager",
                _ => "work",
            };
            let ext = p.extension.as_deref().map(|x| format!(";ext={x}")).unwrap_or_default();
            line(&mut out, &format!("TEL;VALUE=uri;TYPE={kind}:tel:{e}{ext}"));
        }
        for e in &c.emails {
            line(&mut out, &format!("EMAIL:{}", vescape(e)));
        }
        line(&mut out, &format!("UID:urn:gwsync:{}", vescape(&c.resource_name)));
        line(&mut out, "END:VCARD");
    }
    out
}

fn xescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 forbids.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn directory_xml(root: &str, title: Option<&str>, contacts: &[impl AsRef<Contact>]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<{root}>");
    if let Some(t) = title {
        let _ = writeln!(out, "  <Title>{}</Title>", xescape(t));
    }
    for c in contacts.iter().map(AsRef::as_ref).filter(|c| exported(c)) {
        out.push_str("  <DirectoryEntry>\n");
        let _ = writeln!(out, "    <Name>{}</Name>", xescape(c.name.as_deref().unwrap_or("?")));
        for p in &c.phones {
            if let Some(e) = &p.e164 {
                let _ = writeln!(out, "    <Telephone>{}</Telephone>", xescape(e));
            }
        }
        out.push_str("  </DirectoryEntry>\n");
    }
    let _ = writeln!(out, "</{root}>");
    out
}

pub fn yealink(contacts: &[impl AsRef<Contact>]) -> String {
    directory_xml("YealinkIPPhoneDirectory", None, contacts)
}

pub fn snom(title: &str, contacts: &[impl AsRef<Contact>]) -> String {
    directory_xml("SnomIPPhoneDirectory", Some(title), contacts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contacts::numbers::Phone;

    fn contact() -> Contact {
        Contact {
            resource_name: "people/c1".into(),
            source: Source::Shared,
            name: Some("Kund & Partner, \"AB\"; <Stockholm>".into()),
            given_name: None,
            family_name: None,
            organization: Some("Kund AB".into()),
            title: None,
            department: None,
            emails: vec![],
            phones: vec![Phone {
                raw: "08-123 456 78".into(),
                e164: Some("+46812345678".into()),
                extension: None,
                kind: Some("work".into()),
                label: None,
            }],
        }
    }

    #[test]
    fn special_characters_are_escaped_and_long_lines_folded() {
        let v = vcard(&[contact()]);
        assert!(v.contains("FN:Kund & Partner\\, \"AB\"\\; <Stockholm>\r\n"), "{v}");
        assert!(v.contains("TEL;VALUE=uri;TYPE=work:tel:+46812345678\r\n"));
        let mut long = contact();
        long.name = Some("ö".repeat(60));
        let v = vcard(&[long]);
        assert!(v.lines().all(|l| l.len() <= 75), "{v}");
        let x = yealink(&[contact()]);
        assert!(x.contains("<Name>Kund &amp; Partner, &quot;AB&quot;; &lt;Stockholm&gt;</Name>"), "{x}");
        let personal = Contact { source: Source::Personal { owner: "a@x".into() }, ..contact() };
        assert!(!snom("Acme", &[personal]).contains("DirectoryEntry"), "personal contacts stay private");
    }
}
