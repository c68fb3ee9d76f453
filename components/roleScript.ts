// The key step that runs before a host's role is installed (site, laptop VM), from
// components/scripts/host-key.sh and host-key-remove.sh. The roles' shared functions are
// components/scripts/role.sh, status.sh and policy-routing.sh, delivered with each role.
import { scriptWithSettings } from "./shell";

const safeDir = (dir: string) => {
    if (!/^\/[A-Za-z0-9/_.-]+$/.test(dir)) throw new Error(`unsafe key directory ${dir}`);
    return dir;
};

/** Makes the host's WireGuard key (once) and prints its public half. */
export function renderHostKeyCommand(dir: string): string {
    return scriptWithSettings("host-key.sh", { KEY_DIR: safeDir(dir) });
}

/** Removes a key the key step made, when nothing else of the role is left. */
export function renderHostKeyRemoveCommand(dir: string): string {
    return scriptWithSettings("host-key-remove.sh", { KEY_DIR: safeDir(dir) });
}
