// The admin token (ADMIN_TOKEN) the dashboard's data and the admin API need: kept for this
// tab only, sent as a bearer token.
const TOKEN_KEY = "voice-agent-admin-token";
export const savedToken = () => sessionStorage.getItem(TOKEN_KEY) || "";
export const bearer = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

export function storeToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}
