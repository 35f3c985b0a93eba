package fakevllm

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"
)

type rerankResponse struct {
	ID    string `json:"id"`
	Model string `json:"model"`
	Usage struct {
		PromptTokens int  `json:"prompt_tokens"`
		TotalTokens  int  `json:"total_tokens"`
		Completion   *int `json:"completion_tokens"`
	} `json:"usage"`
	Results []struct {
		Index    int `json:"index"`
		Document struct {
			Text       string          `json:"text"`
			MultiModal json.RawMessage `json:"multi_modal"`
		} `json:"document"`
		RelevanceScore float64 `json:"relevance_score"`
	} `json:"results"`
}

func TestRerankGolden(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, body := postJSON(t, base+"/rerank", `{"model":"`+testModel+`","query":"what is audited","documents":["every byte","is hashed before it reaches its client","plain words"],"top_n":2}`)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	checkGolden(t, "rerank", normalizeAll(body))
	// usage comes before results: the body does not end with it.
	if u, r := strings.Index(string(body), `"usage"`), strings.Index(string(body), `"results"`); u < 0 || r < u {
		t.Errorf("usage at %d, results at %d: want usage first", u, r)
	}
}

func TestRerank(t *testing.T) {
	_, base := startServer(t, Config{})
	docs := []string{"a b", "c d e", "f", "g h i j"}
	docsJSON, _ := json.Marshal(docs)
	query := "q r"
	// The scores the fake gives, highest first, as vLLM sorts them.
	order := []int{0, 1, 2, 3}
	sort.SliceStable(order, func(i, j int) bool {
		return RelevanceScore(query, docs[order[i]]) > RelevanceScore(query, docs[order[j]])
	})
	wantPrompt := 0
	for _, d := range docs {
		wantPrompt += CountWords([]byte(query)) + CountWords([]byte(d))
	}
	tests := []struct {
		name, path, body string
		wantN            int
	}{
		{"all documents", "/rerank", `{"query":"q r","documents":` + string(docsJSON) + `}`, 4},
		{"top_n cuts", "/v1/rerank", `{"query":"q r","documents":` + string(docsJSON) + `,"top_n":2}`, 2},
		{"top_n 0 keeps all", "/v2/rerank", `{"query":"q r","documents":` + string(docsJSON) + `,"top_n":0}`, 4},
		{"top_n above count keeps all", "/rerank", `{"query":"q r","documents":` + string(docsJSON) + `,"top_n":9}`, 4},
		{"last top_n wins", "/rerank", `{"query":"q r","documents":` + string(docsJSON) + `,"top_n":1,"top_n":3}`, 3},
		{"model absent serves the base model", "/rerank", `{"query":"q r","documents":` + string(docsJSON) + `,"model":null}`, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postJSON(t, base+tc.path, tc.body)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var r rerankResponse
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatalf("decoding %s: %v", body, err)
			}
			if r.Model != testModel || !strings.HasPrefix(r.ID, "score-") {
				t.Errorf("model %q id %q", r.Model, r.ID)
			}
			if r.Usage.PromptTokens != wantPrompt || r.Usage.TotalTokens != wantPrompt || r.Usage.Completion != nil {
				t.Errorf("usage %+v, want %d prompt tokens and no completion_tokens", r.Usage, wantPrompt)
			}
			if len(r.Results) != tc.wantN {
				t.Fatalf("%d results, want %d", len(r.Results), tc.wantN)
			}
			for i, res := range r.Results {
				if res.Index != order[i] || res.Document.Text != docs[order[i]] || string(res.Document.MultiModal) != "null" {
					t.Errorf("result %d: %+v, want document %d", i, res, order[i])
				}
				if res.RelevanceScore != RelevanceScore(query, docs[order[i]]) {
					t.Errorf("result %d score %v", i, res.RelevanceScore)
				}
			}
		})
	}
}

func TestScore(t *testing.T) {
	_, base := startServer(t, Config{})
	tests := []struct {
		name, body string
		pairs      [][2]string
	}{
		{"text_1 to many text_2", `{"text_1":"q","text_2":["a","b c"]}`, [][2]string{{"q", "a"}, {"q", "b c"}}},
		{"queries and documents N:N", `{"queries":["q1","q2"],"documents":["a","b"]}`, [][2]string{{"q1", "a"}, {"q2", "b"}}},
		{"queries and items", `{"queries":"q","items":"a"}`, [][2]string{{"q", "a"}}},
		{"data_1 and data_2", `{"data_1":["q"],"data_2":["a","b","c"]}`, [][2]string{{"q", "a"}, {"q", "b"}, {"q", "c"}}},
		{"last duplicate wins", `{"text_1":"x","text_1":"q","text_2":"a"}`, [][2]string{{"q", "a"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/score", "/v1/score"} {
				resp, body := postJSON(t, base+path, tc.body)
				if resp.StatusCode != 200 {
					t.Fatalf("%s status %d: %s", path, resp.StatusCode, body)
				}
				var r struct {
					ID     string `json:"id"`
					Object string `json:"object"`
					Model  string `json:"model"`
					Data   []struct {
						Index  int     `json:"index"`
						Object string  `json:"object"`
						Score  float64 `json:"score"`
					} `json:"data"`
					Usage map[string]any `json:"usage"`
				}
				if err := json.Unmarshal(body, &r); err != nil {
					t.Fatal(err)
				}
				prompt := 0
				if len(r.Data) != len(tc.pairs) {
					t.Fatalf("%d scores, want %d: %s", len(r.Data), len(tc.pairs), body)
				}
				for i, p := range tc.pairs {
					if d := r.Data[i]; d.Index != i || d.Object != "score" || d.Score != RelevanceScore(p[0], p[1]) {
						t.Errorf("score %d: %+v", i, d)
					}
					prompt += pairWords(p[0], p[1])
				}
				want := map[string]any{"prompt_tokens": float64(prompt), "total_tokens": float64(prompt), "completion_tokens": 0.0, "prompt_tokens_details": nil}
				if len(r.Usage) != len(want) {
					t.Errorf("usage %v, want %v", r.Usage, want)
				}
				for k, v := range want {
					if r.Usage[k] != v {
						t.Errorf("usage %s = %v, want %v", k, r.Usage[k], v)
					}
				}
				if r.Object != "list" || r.Model != testModel || !strings.HasPrefix(r.ID, "score-") {
					t.Errorf("object %q model %q id %q", r.Object, r.Model, r.ID)
				}
			}
		})
	}
}

func TestRerankScoreErrors(t *testing.T) {
	_, base := startServer(t, Config{})
	_, strict := startServer(t, Config{RequireModel: true})
	tests := []struct {
		name, url, contentType, body string
		status                       int
		errType, msgContains         string
	}{
		{"not JSON content type", base + "/rerank", "text/plain", `{"query":"q","documents":["a"]}`, 400, "Bad Request", "Unsupported Media Type"},
		{"content type with spaces before ;", base + "/rerank", "application/json ; charset=utf-8", `{"query":"q","documents":["a"]}`, 400, "Bad Request", "Unsupported Media Type"},
		{"no content type", base + "/score", "", `{"text_1":"q","text_2":"a"}`, 400, "Bad Request", "Unsupported Media Type"},
		{"malformed JSON", base + "/rerank", "application/json", `{"query":`, 400, "BadRequestError", "JSON decode error"},
		{"missing query", base + "/rerank", "application/json", `{"documents":["a"]}`, 400, "BadRequestError", "body.query"},
		{"missing documents", base + "/rerank", "application/json", `{"query":"q"}`, 400, "BadRequestError", "body.documents"},
		{"empty documents", base + "/rerank", "application/json", `{"query":"q","documents":[]}`, 400, "BadRequestError", "At least one text_pair"},
		{"query a list", base + "/rerank", "application/json", `{"query":["q"],"documents":["a"]}`, 400, "BadRequestError", "body.query"},
		{"document a number", base + "/rerank", "application/json", `{"query":"q","documents":[1]}`, 400, "BadRequestError", "body.documents"},
		{"multimodal document", base + "/rerank", "application/json", `{"query":"q","documents":[{"content":[]}]}`, 400, "BadRequestError", "MultiModalParam"},
		{"negative top_n", base + "/rerank", "application/json", `{"query":"q","documents":["a"],"top_n":-1}`, 400, "BadRequestError", "top_n"},
		{"top_n not a number", base + "/rerank", "application/json", `{"query":"q","documents":["a"],"top_n":"x"}`, 400, "BadRequestError", "top_n"},
		{"unknown model", base + "/rerank", "application/json", `{"model":"nope","query":"q","documents":["a"]}`, 404, "NotFoundError", "`nope` does not exist"},
		{"missing model when required", strict + "/v1/rerank", "application/json", `{"query":"q","documents":["a"]}`, 400, "BadRequestError", "body.model"},
		{"score without a pair", base + "/score", "application/json", `{"text_1":"q"}`, 400, "BadRequestError", "Field required"},
		{"score N:M", base + "/score", "application/json", `{"text_1":["a","b"],"text_2":["c","d","e"]}`, 400, "BadRequestError", "1:1, 1:N or N:N"},
		{"score empty first", base + "/score", "application/json", `{"text_1":[],"text_2":["c"]}`, 400, "BadRequestError", "At least one text element"},
		{"score empty second", base + "/score", "application/json", `{"text_1":"q","text_2":[]}`, 400, "BadRequestError", "At least one text_pair"},
		{"wrong method", base + "/rerank", "", ``, 405, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if tc.status == 405 {
				method = "GET"
			}
			hdr := map[string]string{}
			if tc.contentType != "" {
				hdr["Content-Type"] = tc.contentType
			}
			resp, body := do(t, method, tc.url, tc.body, hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.errType == "" {
				return
			}
			checkErrorBody(t, body, tc.status, tc.errType, tc.msgContains)
		})
	}
}

// checkErrorBody checks vLLM's ErrorResponse shape.
func checkErrorBody(t *testing.T, body []byte, status int, errType, msgContains string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    int    `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	if e.Error.Type != errType || e.Error.Code != status || !strings.Contains(e.Error.Message, msgContains) {
		t.Errorf("error %+v, want type %q code %d message containing %q", e.Error, errType, status, msgContains)
	}
}

func FuzzRerankBody(f *testing.F) {
	f.Add(`{"query":"q","documents":["a","b"],"top_n":1}`)
	f.Add(`{"text_1":["a"],"text_2":"b"}`)
	f.Add(`{"query":{"content":[]},"documents":[null]}`)
	s := New(Config{})
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/rerank", "/score", "/invocations"} {
			ctx := newTestCtx("POST", path, "application/json", body)
			s.Handler(ctx)
			if c := ctx.Response.StatusCode(); c != 200 && c != 400 && c != 404 {
				t.Fatalf("%s %q: status %d", path, body, c)
			}
			if strings.HasPrefix(string(ctx.Response.Header.ContentType()), "text/event-stream") {
				continue
			}
			if !json.Valid(ctx.Response.Body()) {
				t.Fatalf("%s %q: answer is not JSON: %s", path, body, ctx.Response.Body())
			}
		}
	})
}
