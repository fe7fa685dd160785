package agent

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/httpx"
	"github.com/keylime-go/keylime/policy"
	"github.com/keylime-go/keylime/policy/ima"
	"github.com/keylime-go/keylime/tpm"
	"github.com/keylime-go/keylime/tpm/device"
)

// maxNonce is the longest nonce the agent quotes over (Keylime's MAX_NONCE_SIZE).
const maxNonce = 64

func (a *Agent) routes() []httpx.Route {
	return []httpx.Route{
		{Method: http.MethodGet, Path: "/version", Unversioned: true, Handler: a.version},
		{Method: http.MethodGet, Path: "/quotes/identity", Handler: a.identityQuote},
		{Method: http.MethodGet, Path: "/quotes/integrity", Handler: a.integrityQuote},
		{Method: http.MethodGet, Path: "/keys/pubkey", Handler: a.pubkey},
		{Method: http.MethodGet, Path: "/agent/info", MinVersion: "2.2", Handler: a.info},
		{Method: http.MethodPost, Path: "/notifications/revocation", Handler: a.revocation},
	}
}

// Handler returns the agent API handler.
func (a *Agent) Handler() http.Handler {
	return httpx.NewRouter(a.log, api.SupportedVersions, append(a.routes(), a.keyRoutes()...))
}

func (a *Agent) version(*httpx.Request) (any, error) {
	return api.AgentVersion{SupportedVersion: api.CurrentVersion, SupportedVersions: api.SupportedVersions}, nil
}

func (a *Agent) pubkey(*httpx.Request) (any, error) {
	return api.PubKey{PubKey: string(a.nkPEM)}, nil
}

func (a *Agent) info(req *httpx.Request) (any, error) {
	return api.AgentInfo{
		AgentUUID:  a.uuid,
		TPMHashAlg: a.cfg.HashAlg,
		TPMEncAlg:  encAlg(a.ek, req.Version),
		TPMSignAlg: signAlg(a.ak),
		AKHandle:   uint32(a.ak.Handle),
	}, nil
}

// encAlg is the EK algorithm as Keylime spells it: "rsa2048"/"ecc256" from API 2.5, "rsa"/"ecc" before
// for RSA-2048 and P-256; other sizes always carry their size.
func encAlg(ek *device.EK, version string) string {
	old := api.CompareVersions(version, "2.5") < 0
	if ek.Public.Type == tpm2.TPMAlgRSA {
		if old {
			return "rsa"
		}
		if d, err := ek.Public.Parameters.RSADetail(); err == nil {
			return "rsa" + strconv.Itoa(int(d.KeyBits))
		}
		return "rsa2048"
	}
	if d, err := ek.Public.Parameters.ECCDetail(); err == nil {
		switch d.CurveID {
		case tpm2.TPMECCNistP256:
			if old {
				return "ecc"
			}
			return "ecc256"
		case tpm2.TPMECCNistP384:
			return "ecc384"
		case tpm2.TPMECCNistP521:
			return "ecc521"
		}
	}
	return "ecc"
}

func signAlg(ak *device.AK) string {
	if ak.Public.Type == tpm2.TPMAlgRSA {
		return "rsassa"
	}
	return "ecdsa"
}

func checkNonce(nonce string) error {
	if nonce == "" || len(nonce) > maxNonce {
		return httpx.Errorf(http.StatusBadRequest, "nonce must be 1-%d alphanumeric characters", maxNonce)
	}
	for _, c := range nonce {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return httpx.Errorf(http.StatusBadRequest, "nonce must be alphanumeric")
		}
	}
	return nil
}

func (a *Agent) identityQuote(req *httpx.Request) (any, error) {
	q := req.URL.Query()
	nonce := q.Get("nonce")
	if err := checkNonce(nonce); err != nil {
		return nil, err
	}
	return a.quote(req.Version, nonce, 0, true, -1)
}

func (a *Agent) integrityQuote(req *httpx.Request) (any, error) {
	q := req.URL.Query()
	nonce := q.Get("nonce")
	if err := checkNonce(nonce); err != nil {
		return nil, err
	}
	maskText := q.Get("mask")
	for _, c := range maskText {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return nil, httpx.Errorf(http.StatusBadRequest, "mask must be a hex PCR mask such as 0x408400")
		}
	}
	mask, err := policy.ParseMask(maskText)
	if err != nil {
		return nil, httpx.BadRequest("invalid mask", err)
	}
	partial := q.Get("partial")
	if partial != "0" && partial != "1" {
		return nil, httpx.Errorf(http.StatusBadRequest, "partial must be 0 or 1")
	}
	entry, err := strconv.Atoi(q.Get("ima_ml_entry"))
	if err != nil || entry < 0 {
		entry = 0
	}
	return a.quote(req.Version, nonce, mask, partial == "0", entry)
}

// quote resets PCR 16, extends it with the NK's hash, quotes the PCRs in mask plus 16 over nonce, and
// adds the logs: the IMA log from imaEntry (imaEntry < 0: none) and the UEFI log when PCR 0 is quoted.
func (a *Agent) quote(version, nonce string, mask uint32, withPubkey bool, imaEntry int) (*api.QuoteResponse, error) {
	start := time.Now()
	bank, h, err := tpm.HashByName(a.cfg.HashAlg)
	if err != nil {
		return nil, err
	}
	pcrs := policy.MaskPCRs(mask | 1<<policy.DataPCR)
	nkHash := h.New()
	nkHash.Write(a.nkPEM)

	a.quoteMu.Lock()
	var q *device.Quote
	err = a.cfg.TPM.PCRReset(policy.DataPCR)
	if err == nil {
		err = a.cfg.TPM.PCRExtend(policy.DataPCR, bank, nkHash.Sum(nil))
	}
	if err == nil {
		var cands device.Candidates
		if mask&(1<<policy.IMAPCR) != 0 && a.cfg.IMALogPath != "" {
			cands = func(bank tpm2.TPMAlgID) map[int][][]byte {
				return map[int][][]byte{policy.IMAPCR: imaPCR10Values(a.cfg.IMALogPath, bank)}
			}
		}
		q, err = a.cfg.TPM.QuoteResolving(a.ak, []byte(nonce), bank, pcrs, cands)
	}
	a.quoteMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	blob, err := tpm.MarshalPCRBlob([]tpm.PCRBank{{Alg: q.Bank, Values: q.PCRs}})
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	res := &api.QuoteResponse{
		Quote:   (&tpm.Quote{Attest: q.Attest, Signature: q.Signature, PCRBlob: blob}).String(),
		HashAlg: a.cfg.HashAlg,
		EncAlg:  encAlg(a.ek, version),
		SignAlg: signAlg(a.ak),
	}
	if withPubkey {
		res.PubKey = string(a.nkPEM)
	}
	if imaEntry >= 0 && mask&(1<<10) != 0 && a.cfg.IMALogPath != "" {
		list, first, err := readIMALog(a.cfg.IMALogPath, imaEntry)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read IMA log: %w", err)
		}
		if err == nil {
			res.IMAMeasurementList, res.IMAMeasurementListEntry = &list, &first
		}
	}
	if mask&1 != 0 && a.cfg.MBLogPath != "" {
		b, err := os.ReadFile(a.cfg.MBLogPath)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read UEFI event log: %w", err)
		}
		if err == nil {
			s := base64.StdEncoding.EncodeToString(b)
			res.MBMeasurementList = &s
		}
	}
	a.log.Debug().Str("mask", policy.FormatMask(mask)).Bool("pubkey", withPubkey).Dur("took", time.Since(start)).Msg("quote")
	return res, nil
}

// maxPCR10Values bounds how many running PCR 10 values imaPCR10Values keeps (the latest): the quote
// being resolved was taken just before the log was read.
const maxPCR10Values = 4096

// imaPCR10Values replays the IMA log into PCR 10 of bank and returns the running values after each
// entry (the latest maxPCR10Values, oldest first): what PCR 10 may have held when a quote was taken
// while the kernel kept extending it. Unreadable logs or lines give what was replayed so far.
func imaPCR10Values(path string, bank tpm2.TPMAlgID) [][]byte {
	h, err := bank.Hash()
	if err != nil || ima.CheckBank(h) != nil {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	running := make([]byte, h.Size())
	out := [][]byte{bytes.Clone(running)}
	p := ima.NewBytesParser(data, 0)
	var ext []byte
	for {
		e, err := p.Next()
		if err != nil {
			var pe *ima.ParseError
			if errors.As(err, &pe) {
				continue
			}
			break // io.EOF or a read error
		}
		if e.PCR != policy.IMAPCR {
			continue
		}
		ext = e.ExtendValue(h, ext[:0])
		w := h.New()
		w.Write(running)
		w.Write(ext)
		running = w.Sum(running[:0])
		if len(out) == maxPCR10Values {
			out = out[1:]
		}
		out = append(out, bytes.Clone(running))
	}
	return out
}

// readIMALog returns the ASCII IMA log from entry first on; when first is beyond the log, the whole log
// from entry 0 (the verifier then knows the machine rebooted).
func readIMALog(path string, first int) (string, int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	text := string(b)
	if first == 0 {
		return text, 0, nil
	}
	off := 0
	for i := 0; i < first; i++ {
		nl := strings.IndexByte(text[off:], '\n')
		if nl < 0 {
			return text, 0, nil
		}
		off += nl + 1
	}
	if off >= len(text) && first > 0 {
		// Exactly at the end: nothing new yet.
		return "", first, nil
	}
	return text[off:], first, nil
}
