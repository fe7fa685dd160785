// Package fleet runs a simulated fleet of Keylime agents in one process, for verifier load tests and
// the fleetbench benchmark (it is never linked into the release binary).
//
// Each agent is a softagent (software TPM with its own AK, quotes in Keylime's exact wire format) with
// its own software EK, served on its own loopback port over mTLS with its own self-signed certificate.
// The fleet registers its agents with a registrar over the real wire API (register, then activate with
// the software TPM's ActivateCredential), adds them to a verifier through the tenant API (the agent's
// registrar record, as a tenant reads it, then POST /agents/{id}), and times every quote request it
// serves: the gap between two requests to one agent (the verifier's poll period), the time the agent
// took to answer, and when each agent was first polled after a given moment (a verifier restart).
package fleet
