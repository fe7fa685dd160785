package revocation

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzVerify: no message but the one signed verifies, whatever the body and signature.
func FuzzVerify(f *testing.F) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	msg := sample().Encode()
	sig, _ := Sign(key, msg)
	f.Add(msg, sig)
	f.Add(msg, "")
	f.Add(msg+" ", sig)
	f.Add("{}", sig)
	f.Add(msg, sig[:30])
	f.Fuzz(func(t *testing.T, m, s string) {
		got, err := Verify(&key.PublicKey, Envelope{Msg: m, Signature: s})
		if err == nil {
			if m != msg || got == nil {
				t.Fatalf("verified a message that was never signed: %q", m)
			}
			return
		}
		if m != msg && !errors.Is(err, ErrBadSignature) {
			t.Fatalf("unsigned message refused for another reason: %v", err)
		}
	})
}

// FuzzEncode: whatever the field values, Encode writes JSON that decodes to the same message.
func FuzzEncode(f *testing.F) {
	s := sample()
	f.Add(s.Type, *s.IP, s.AgentID, *s.Port, s.TPMPolicy, s.MetaData, s.EventTime, s.EventID, s.Context)
	f.Add("comm_error", "::1", "a\"b\\c", -1, "\x00\x1f\u2028", "Ünïcode ✓ 😀", "", "", "")
	f.Add("r", "", "\xff\xfe", 0, "\t\n\r\b\f", "{}", "t", "e", "\ud7ff\ue000")
	f.Fuzz(func(t *testing.T, typ, ip, id string, port int, tpm, meta, when, event, ctx string) {
		in := &Message{Type: typ, IP: &ip, AgentID: id, Port: &port, TPMPolicy: tpm, MetaData: meta, EventTime: when, EventID: event, Context: ctx}
		text := in.Encode()
		var out Message
		if err := json.Unmarshal([]byte(text), &out); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, text)
		}
		// JSON carries text: invalid UTF-8 becomes U+FFFD on both sides.
		norm := func(s string) string { b, _ := json.Marshal(s); var r string; _ = json.Unmarshal(b, &r); return r }
		if out.Type != norm(typ) || *out.IP != norm(ip) || out.AgentID != norm(id) || *out.Port != port || out.TPMPolicy != norm(tpm) ||
			out.MetaData != norm(meta) || out.EventTime != norm(when) {
			t.Fatalf("round trip changed the message:\n in %+v\nout %+v", in, out)
		}
		if event != "" && (out.EventID != norm(event) || out.Context != norm(ctx)) {
			t.Fatalf("round trip changed the event: %+v", out)
		}
	})
}
