/**
 * The admin panel's entry point. The theme comes first, before anything is drawn. Each page module
 * registers itself (see pages.ts) in the order of the navigation; the shell does the rest.
 */
import "./theme.ts";
import "./pages/dashboard.ts";
import "./pages/keys.ts";
import "./pages/clients.ts";
import "./pages/hosts.ts";
import "./pages/certificates.ts";
import "./pages/applications.ts";
import "./pages/licenses.ts";
import "./pages/users.ts";
import "./pages/my-certificates.ts";
import "./pages/audit.ts";
import { Shell } from "./shell.ts";

const root = document.getElementById("app");
if (root) void new Shell(root).start();
