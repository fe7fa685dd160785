package tenant

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/keylime-go/keylime/policy"
)

// BuildTPMPolicy turns the operator's --tpm_policy JSON ({"15": ["<hex>", …], "7": "<hex>"}; empty means
// {}) into the policy sent to the verifier, computing the PCR mask as Keylime's tenant does: one bit per
// policy PCR (runtime and measured-boot policies will add theirs). A "mask" key in the input is refused,
// as Keylime refuses it: the tenant computes the mask. Errors wrap policy.ErrBadTPMPolicy.
func BuildTPMPolicy(s string) (*policy.TPMPolicy, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		s = "{}"
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", policy.ErrBadTPMPolicy, err)
	}
	if _, ok := raw["mask"]; ok {
		return nil, fmt.Errorf("%w: \"mask\" is computed by the tenant and cannot be given", policy.ErrBadTPMPolicy)
	}
	p, err := policy.ParseTPMPolicy(s)
	if err != nil {
		return nil, err
	}
	return p, nil
}
