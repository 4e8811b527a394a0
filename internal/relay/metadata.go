package relay

import (
	"net/http"

	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// metadataName is the display name in the relay's auth metadata document.
const metadataName = "pushproxy relay"

// metadata serves the relay's auth metadata document: the relay's
// principal as issuer, the audience tokens must name, and the relay's
// endpoints, named under Config.PublicURL (never the request's Host, so a
// shared cache cannot be poisoned with a forged one). The relay signs
// nothing, so it publishes no keys. In multi-tenant mode the realm is "*".
func (s *Server) metadata(w http.ResponseWriter, _ *http.Request) {
	realm := s.cfg.realmOrAny()
	base := s.cfg.publicBase()
	m, err := tokens.BuildMetadata(tokens.MetadataOptions{
		Name:             metadataName,
		IssuerID:         s.cfg.Principal,
		Realm:            realm,
		AllowedAudiences: []string{s.cfg.Principal + "/" + s.cfg.Host + "@" + realm},
		Endpoints: []tokens.MetadataEndpoint{
			{Location: base + relayproto.PublishPath, Protocol: "pushproxy", Usage: "publish"},
			{Location: base + relayproto.MetadataPath, Protocol: "OAuth2", Usage: "metadata"},
		},
	})
	if err != nil {
		s.log.Error().Err(err).Msg("building auth metadata")
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusInternalServerError, Code: "internal", Message: "the auth metadata document cannot be built"})
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=3600")
	httpjson.Write(w, http.StatusOK, m)
}
