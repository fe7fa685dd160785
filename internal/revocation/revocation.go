// Package revocation builds, signs and verifies Keylime's revocation messages: the verifier sends
// {"msg": <JSON text>, "signature": b64(RSA-PSS-SHA256 over the exact msg bytes, MGF1-SHA256, maximum salt)}
// to agents and webhooks when an agent fails, and receivers act only on messages whose signature verifies
// with the revocation certificate they trust.
package revocation

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is the content of a revocation notification, with Keylime's field names.
type Message struct {
	Type          string  `json:"type"` // "revocation" or "comm_error"
	IP            *string `json:"ip"`
	AgentID       string  `json:"agent_id"`
	Port          *int    `json:"port"`
	TPMPolicy     string  `json:"tpm_policy"`
	MetaData      string  `json:"meta_data"`
	EventTime     string  `json:"event_time"`
	EventID       string  `json:"event_id,omitempty"`
	SeverityLabel string  `json:"severity_label,omitempty"`
	// Context is itself a JSON text.
	Context string `json:"context,omitempty"`
}

// Envelope is the wire body: the message text and its signature ("" when unsigned).
type Envelope struct {
	Msg       string `json:"msg"`
	Signature string `json:"signature"`
}

// EventTime formats t as Python's time.asctime(), which Keylime puts in event_time.
func EventTime(t time.Time) string { return t.Format("Mon Jan _2 15:04:05 2006") }

// Encode writes m as Python's json.dumps would (", " and ": " separators, ASCII-only escapes, Keylime's
// field order), so receivers written for upstream see the text they expect.
func (m *Message) Encode() string {
	var b strings.Builder
	b.WriteByte('{')
	field := func(name, value string, first bool) {
		if !first {
			b.WriteString(", ")
		}
		b.WriteString(pyString(name))
		b.WriteString(": ")
		b.WriteString(value)
	}
	optStr := func(s *string) string {
		if s == nil {
			return "null"
		}
		return pyString(*s)
	}
	port := "null"
	if m.Port != nil {
		port = strconv.Itoa(*m.Port)
	}
	field("type", pyString(m.Type), true)
	field("ip", optStr(m.IP), false)
	field("agent_id", pyString(m.AgentID), false)
	field("port", port, false)
	field("tpm_policy", pyString(m.TPMPolicy), false)
	field("meta_data", pyString(m.MetaData), false)
	field("event_time", pyString(m.EventTime), false)
	if m.EventID != "" {
		field("event_id", pyString(m.EventID), false)
		field("severity_label", pyString(m.SeverityLabel), false)
		field("context", pyString(m.Context), false)
	}
	b.WriteByte('}')
	return b.String()
}

// pyString quotes s like Python's json.dumps with ensure_ascii.
func pyString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20:
				fmt.Fprintf(&b, `\u%04x`, r)
			case r < 0x80:
				b.WriteRune(r)
			case r == utf8.RuneError:
				b.WriteString(`\ufffd`)
			case r > 0xffff:
				r -= 0x10000
				fmt.Fprintf(&b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			default:
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Sign signs msg with RSA-PSS (SHA-256, MGF1-SHA-256, maximum salt length) and returns the base64
// signature.
func Sign(key *rsa.PrivateKey, msg string) (string, error) {
	h := sha256.Sum256([]byte(msg))
	sig, err := rsa.SignPSS(rand.Reader, key, crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	if err != nil {
		return "", fmt.Errorf("sign revocation: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// ErrBadSignature is returned for unsigned, forged or altered messages.
var ErrBadSignature = errors.New("revocation message signature does not verify")

// Verify checks env's signature with pub and returns the parsed message.
func Verify(pub *rsa.PublicKey, env Envelope) (*Message, error) {
	if env.Signature == "" {
		return nil, fmt.Errorf("%w: message is unsigned", ErrBadSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signature)
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64", ErrBadSignature)
	}
	h := sha256.Sum256([]byte(env.Msg))
	if err := rsa.VerifyPSS(pub, crypto.SHA256, h[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}); err != nil {
		return nil, ErrBadSignature
	}
	var m Message
	if err := json.Unmarshal([]byte(env.Msg), &m); err != nil {
		return nil, fmt.Errorf("revocation message is not JSON: %w", err)
	}
	return &m, nil
}
