/**
 * The append-only list of schema migrations, embedded into the binary as text. Never edit a
 * migration that has shipped: add the next one.
 */
import init from "./0001_init.sql" with { type: "text" };
import licensing from "./0002_licensing.sql" with { type: "text" };
import enrollment from "./0003_enrollment.sql" with { type: "text" };
import checkCounters from "./0004_check_counters.sql" with { type: "text" };
import credentialVersion from "./0005_credential_version.sql" with { type: "text" };
import ca from "./0006_ca.sql" with { type: "text" };
import clientCertificates from "./0007_client_certificates.sql" with { type: "text" };
import userCertificates from "./0008_user_certificates.sql" with { type: "text" };
import stats from "./0009_stats.sql" with { type: "text" };
import nodes from "./0010_nodes.sql" with { type: "text" };
import throttles from "./0011_throttles.sql" with { type: "text" };
import hotPaths from "./0012_hot_paths.sql" with { type: "text" };
import signInExchanges from "./0013_sign_in_exchanges.sql" with { type: "text" };
import registration from "./0014_registration.sql" with { type: "text" };

export interface Migration {
  name: string;
  sql: string;
}

export const migrations: readonly Migration[] = [
  { name: "0001_init", sql: init },
  { name: "0002_licensing", sql: licensing },
  { name: "0003_enrollment", sql: enrollment },
  { name: "0004_check_counters", sql: checkCounters },
  { name: "0005_credential_version", sql: credentialVersion },
  { name: "0006_ca", sql: ca },
  { name: "0007_client_certificates", sql: clientCertificates },
  { name: "0008_user_certificates", sql: userCertificates },
  { name: "0009_stats", sql: stats },
  { name: "0010_nodes", sql: nodes },
  { name: "0011_throttles", sql: throttles },
  { name: "0012_hot_paths", sql: hotPaths },
  { name: "0013_sign_in_exchanges", sql: signInExchanges },
  { name: "0014_registration", sql: registration },
];
