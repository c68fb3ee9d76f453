// RoamingClient: a phone or laptop app that joins the gateway directly. Preferably the device
// makes its key and the stack holds only the public key; otherwise the program generates
// one (a random.RandomBytes, so it lives in the stack's state as a secret). Either way the
// client gets a ready-to-import config as a secret output. Renderers live in
// roamingClient.render.ts.
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { renderClientConfig, wireguardPublicKey } from "./roamingClient.render";

export interface RoamingClientArgs {
    /** The device's public key; without it a key is generated. */
    publicKey?: string;
    addressV4: string;
    addressV6: string;
    dns: string[];
    mtu: number;
    gateway: { publicKey: pulumi.Input<string>; endpoint: pulumi.Input<string> };
    /** The stack's further gateways: one more config each (same key, that gateway's addresses). */
    furtherGateways?: { name: string; addressV4: string; addressV6: string; mtu: number; publicKey: pulumi.Input<string>; endpoint: pulumi.Input<string> }[];
}

export class RoamingClient extends pulumi.ComponentResource {
    readonly publicKey: pulumi.Output<string>;
    /** The config to import on the device (secret: it may hold a generated private key). */
    readonly config: pulumi.Output<string>;
    readonly generated: boolean;
    /** With further gateways: a config per further gateway, by its name (secret, as config). */
    readonly furtherConfigs?: pulumi.Output<Record<string, string>>;

    constructor(name: string, args: RoamingClientArgs, opts?: pulumi.ComponentResourceOptions) {
        super("wgexit:index:RoamingClient", name, {}, opts);
        this.generated = args.publicKey === undefined;
        const privateKey = this.generated ? new random.RandomBytes(`${name}-key`, { length: 32 }, { parent: this }).base64 : undefined;
        // A public key is public, even when derived from a secret.
        this.publicKey = privateKey ? pulumi.unsecret(privateKey.apply(wireguardPublicKey)) : pulumi.output(args.publicKey as string);
        this.config = pulumi.secret(
            pulumi.all([privateKey, args.gateway.publicKey, args.gateway.endpoint]).apply(([key, gatewayPublicKey, endpoint]) =>
                renderClientConfig({ privateKey: key, addressV4: args.addressV4, addressV6: args.addressV6, dns: args.dns, mtu: args.mtu, gatewayPublicKey, endpoint }),
            ),
        );
        const further = args.furtherGateways;
        if (further?.length) {
            this.furtherConfigs = pulumi.secret(
                pulumi.all([privateKey, pulumi.all(further.map((g) => pulumi.all([g.publicKey, g.endpoint])))]).apply(([key, gateways]) =>
                    Object.fromEntries(
                        further.map((g, i) => [
                            g.name,
                            renderClientConfig({ privateKey: key, addressV4: g.addressV4, addressV6: g.addressV6, dns: args.dns, mtu: g.mtu, gatewayPublicKey: gateways[i][0], endpoint: gateways[i][1] }),
                        ]),
                    ),
                ),
            );
        }
        this.registerOutputs({ publicKey: this.publicKey, config: this.config, ...(this.furtherConfigs ? { furtherConfigs: this.furtherConfigs } : {}) });
    }
}
