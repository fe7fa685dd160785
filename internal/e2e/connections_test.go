package e2e

import (
	"testing"
	"time"

	"github.com/keylime-go/keylime/internal/testbed/softagent"
	"github.com/keylime-go/keylime/verifier"
)

// TestKeptAliveConnection: the verifier polls an agent over one kept-alive connection, and a restarted
// verifier resumes the TLS session it saved in verifier.db (no full handshake).
func TestKeptAliveConnection(t *testing.T) {
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{QuoteInterval: 50 * time.Millisecond})
	sa := addSoftAgent(t, s, softagent.Config{}, nil)
	st, err := s.WaitVerifier(sa.UUID(), 10*time.Second, Attested(10))
	if err != nil {
		t.Fatal(err)
	}
	if all, resumed := sa.Handshakes(); all != 1 || resumed != 0 {
		t.Fatalf("%d handshakes (%d resumed) for %d quotes, want 1 (0)", all, resumed, st.AttestationCount)
	}
	s.StopVerifier()
	s.StartVerifier(VerifierOptions{QuoteInterval: 50 * time.Millisecond})
	if _, err := s.WaitVerifier(sa.UUID(), 10*time.Second, Attested(st.AttestationCount+5)); err != nil {
		t.Fatal(err)
	}
	if all, resumed := sa.Handshakes(); all != 2 || resumed != 1 {
		t.Fatalf("after the restart: %d handshakes, %d resumed; want 2, 1", all, resumed)
	}
}

// TestPerQuoteConnections: with agent_connections "per-quote" the verifier opens a new pinned TLS
// connection for every quote, resuming the session, and attests as with kept-alive connections.
func TestPerQuoteConnections(t *testing.T) {
	s := NewSystem(t)
	s.StartVerifier(VerifierOptions{QuoteInterval: 50 * time.Millisecond, AgentConnections: verifier.ConnectPerQuote})
	sa := addSoftAgent(t, s, softagent.Config{}, nil)
	if _, err := s.WaitVerifier(sa.UUID(), 10*time.Second, Attested(5)); err != nil {
		t.Fatal(err)
	}
	all, resumed := sa.Handshakes()
	if all < 5 || resumed != all-1 {
		t.Fatalf("%d handshakes, %d resumed; want at least 5, all but the first resumed", all, resumed)
	}
}
